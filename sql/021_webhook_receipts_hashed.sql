-- A replay receipt keeps the digest of a webhook-id, never the id: the sender chooses it, and it may be
-- personal (an e-mail address). Receipts stored before keep theirs as digests too.
UPDATE webhook_receipts SET webhook_id = 'sha256:' || encode(sha256(convert_to(webhook_id, 'UTF8')), 'hex')
WHERE webhook_id NOT LIKE 'sha256:%';
