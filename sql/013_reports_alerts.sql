-- History and alerts (CONTRACT section 11): a daily roll-up per site, kept at least 400 days; alerts
-- raised by rules, each open at most once per rule and subject whatever the replicas; and the durable
-- queue of their webhook deliveries, so that a restart loses none.

CREATE TABLE daily_reports (
    site          text             NOT NULL,
    day           date             NOT NULL,  -- in the site's own time zone
    arrivals      integer          NOT NULL,
    served        integer          NOT NULL,
    no_shows      integer          NOT NULL,
    cancellations integer          NOT NULL,
    wait_p50_s    double precision,
    wait_p90_s    double precision,
    within_target double precision,  -- share of the day's calls whose wait stayed within the target
    failures      integer          NOT NULL,
    drift         integer          NOT NULL,
    computed_at   timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (site, day)
);
CREATE INDEX daily_reports_day ON daily_reports (day);

-- A condition seen true, since when: a rule raises once it has held for its `for_minutes`.
CREATE TABLE alert_pending (
    rule    text        NOT NULL,
    subject text        NOT NULL,
    since   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (rule, subject)
);

CREATE TABLE alerts (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule        text             NOT NULL,
    kind        text             NOT NULL,
    subject     text             NOT NULL,
    site        text,            -- NULL: concerns every site (a system down)
    status      text             NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged', 'resolved')),
    summary     text             NOT NULL,
    value       double precision NOT NULL,
    threshold   double precision NOT NULL,
    raised_at   timestamptz      NOT NULL DEFAULT now(),
    acked_at    timestamptz,
    acked_by    text,
    resolved_at timestamptz
);
-- raised once across replicas: one unresolved alert per rule and subject
CREATE UNIQUE INDEX alerts_one_open ON alerts (rule, subject) WHERE status IN ('open', 'acknowledged');
CREATE INDEX alerts_status_site ON alerts (status, site, id DESC);
CREATE INDEX alerts_resolved ON alerts (resolved_at) WHERE status = 'resolved';

CREATE TABLE alert_deliveries (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id     bigint      NOT NULL REFERENCES alerts (id) ON DELETE CASCADE,
    event        text        NOT NULL CHECK (event IN ('alert.raised', 'alert.resolved')),
    url          text        NOT NULL,
    status       text        NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts     integer     NOT NULL DEFAULT 0,
    next_at      timestamptz NOT NULL DEFAULT now(),
    last_error   text,
    payload      jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    UNIQUE (alert_id, event, url)
);
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_at) WHERE status = 'pending';
