-- sessiond schema, PostgreSQL. Mirrors migrations/sqlite: instants are Unix milliseconds (BIGINT).

CREATE TABLE users (
    id                       BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- never reused: history refers to it
    name                     TEXT    NOT NULL,
    name_key                 TEXT    NOT NULL UNIQUE,           -- lower(name), for case-insensitive lookup
    guid                     TEXT    NOT NULL,
    full_name                TEXT    NOT NULL DEFAULT '',
    email                    TEXT    NOT NULL DEFAULT '',
    description              TEXT    NOT NULL DEFAULT '',
    enabled                  BOOLEAN NOT NULL,
    roles                    TEXT    NOT NULL DEFAULT '',       -- comma-separated role names
    password_hash            TEXT    NOT NULL,
    created_at               BIGINT  NOT NULL,
    updated_at               BIGINT  NOT NULL,
    next_browser_session_id  BIGINT  NOT NULL DEFAULT 1
);

CREATE TABLE sessions (
    id                 UUID    PRIMARY KEY,
    token_hash         BYTEA   NOT NULL UNIQUE,                 -- SHA-256 of the secret
    user_id            BIGINT  NOT NULL,
    user_name          TEXT    NOT NULL,
    host               TEXT    NOT NULL,
    user_agent         TEXT    NOT NULL,
    device_id          TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    console_type       INTEGER NOT NULL,
    dialect            TEXT    NOT NULL,
    browser_session_id BIGINT  NOT NULL,
    created_at         BIGINT  NOT NULL,
    last_accessed_at   BIGINT  NOT NULL,
    idle_timeout_ms    BIGINT  NOT NULL,
    expires_at         BIGINT  NOT NULL,                        -- absolute end of life
    deadline_at        BIGINT  NOT NULL,                        -- least(last_accessed_at + idle, expires_at)
    ended_at           BIGINT,                                  -- NULL while recorded live
    end_reason         TEXT
);
CREATE INDEX sessions_by_user    ON sessions (user_id, created_at DESC, id DESC);
CREATE INDEX sessions_by_created ON sessions (created_at DESC, id DESC);
CREATE INDEX sessions_by_host    ON sessions (host, created_at DESC, id DESC);
CREATE INDEX sessions_live_by_deadline ON sessions (deadline_at) WHERE ended_at IS NULL;
CREATE INDEX sessions_live_by_user     ON sessions (user_id) WHERE ended_at IS NULL;
CREATE INDEX sessions_ended_by_time    ON sessions (ended_at) WHERE ended_at IS NOT NULL;

CREATE TABLE audit_events (
    id           BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT  NOT NULL,
    kind         TEXT    NOT NULL,
    actor_id     BIGINT,
    actor_name   TEXT,
    subject_id   BIGINT,
    subject_name TEXT,
    session_id   UUID,
    source       TEXT    NOT NULL,
    dialect      TEXT,
    detail       TEXT    NOT NULL
);
CREATE INDEX audit_by_at      ON audit_events (at);
CREATE INDEX audit_by_actor   ON audit_events (actor_id, id);
CREATE INDEX audit_by_subject ON audit_events (subject_id, id);

CREATE TABLE login_failures (
    key          TEXT    PRIMARY KEY,                           -- "user:<name>" or "addr:<ip>"
    failures     INTEGER NOT NULL,
    window_start BIGINT  NOT NULL,
    locked_until BIGINT,
    lockouts     INTEGER NOT NULL DEFAULT 0
);
