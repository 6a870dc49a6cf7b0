-- Cross-signing (spec: "Cross-signing"): each user's master, self-signing
-- and user-signing keys, and signatures uploaded for keys (devices' or
-- other users' master keys).
CREATE TABLE cross_signing_keys (
    user_id  TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);
CREATE TABLE key_signatures (
    target_user   TEXT NOT NULL,
    target_key    TEXT NOT NULL,
    signer_user   TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature     TEXT NOT NULL,
    PRIMARY KEY (target_user, target_key, signer_user, signer_key_id)
);
