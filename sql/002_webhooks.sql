-- Inbound Standard Webhooks: every accepted `webhook-id` per system, so a replay is refused.
-- A receipt only needs to outlive the signature's timestamp tolerance (5 minutes); older ones are pruned.
CREATE TABLE webhook_receipts (
    system      text        NOT NULL,
    webhook_id  text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (system, webhook_id)
);
CREATE INDEX webhook_receipts_received ON webhook_receipts (received_at);
