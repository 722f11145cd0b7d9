-- Schema version 2: a partner's own revocation policy for certificates whose
-- revocation state is unknown ('' = the proxy's setting `revocation`).

ALTER TABLE partners ADD COLUMN revocation TEXT NOT NULL DEFAULT ''
    CHECK (revocation IN ('', 'soft', 'hard'));
