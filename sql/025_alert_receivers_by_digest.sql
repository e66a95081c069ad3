-- a receiver's URL may hold its secret (a chat service's incoming webhook is a secret path): a delivery keeps
-- the URL's digest, by which the configured receiver is found when it is sent, and what may be shown of it
ALTER TABLE alert_deliveries ADD COLUMN target text;
UPDATE alert_deliveries SET target = substring(url FROM '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#@]*@?[^/?#]*')
    || CASE WHEN url ~ '^[A-Za-z][A-Za-z0-9+.-]*://[^/?#]*/[^?#]' THEN '/…' ELSE '' END
    WHERE url NOT LIKE 'sha256:%';
UPDATE alert_deliveries SET target = regexp_replace(target, '://[^/@]*@', '://') WHERE target LIKE '%@%';
UPDATE alert_deliveries SET url = 'sha256:' || encode(sha256(convert_to(url, 'UTF8')), 'hex')
    WHERE url NOT LIKE 'sha256:%';
ALTER TABLE alert_deliveries ALTER COLUMN target SET NOT NULL;
ALTER TABLE alert_deliveries RENAME COLUMN url TO receiver;
