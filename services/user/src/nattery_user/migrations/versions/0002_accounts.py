"""Orgs, users, memberships, settings, signing keys, sessions, refresh tokens, API tokens, audit log.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE orgs (
            id uuid PRIMARY KEY,
            name text NOT NULL,
            slug text NOT NULL UNIQUE,
            created_at timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE users (
            id uuid PRIMARY KEY,
            email text NOT NULL,
            display_name text NOT NULL DEFAULT '',
            password_hash text NOT NULL,
            disabled_at timestamptz,                -- platform-wide (every org)
            created_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE UNIQUE INDEX users_email ON users (lower(email));

        CREATE TABLE memberships (
            org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
            user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            disabled_at timestamptz,                -- an org's admin disables access to that org only
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (org_id, user_id)
        );
        CREATE INDEX memberships_user ON memberships (user_id);

        CREATE TABLE user_settings (
            user_id uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
            timezone text NOT NULL DEFAULT 'UTC',
            units text NOT NULL DEFAULT 'metric',
            notifications jsonb NOT NULL DEFAULT '{}'::jsonb,
            updated_at timestamptz NOT NULL DEFAULT now()
        );

        -- RS256 signing keys. A key is published (in the JWKS) from created_at, signs from
        -- activates_at until a newer key activates, and stays published until retire_after.
        CREATE TABLE signing_keys (
            kid text PRIMARY KEY,
            public_jwk jsonb NOT NULL,
            private_key_encrypted bytea NOT NULL,   -- AES-256-GCM(nonce || ciphertext), AAD = kid
            created_at timestamptz NOT NULL DEFAULT now(),
            activates_at timestamptz NOT NULL,
            retire_after timestamptz
        );
        CREATE INDEX signing_keys_activates_at ON signing_keys (activates_at);

        -- One session per login = one refresh-token family.
        CREATE TABLE sessions (
            id uuid PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
            current_token_hash bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            rotated_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz,
            revoked_reason text,
            client_address text,
            user_agent text
        );
        CREATE INDEX sessions_user ON sessions (user_id);

        -- Every refresh token ever issued, to tell reuse of a rotated token from a forgery.
        CREATE TABLE refresh_tokens (
            token_hash bytea PRIMARY KEY,
            session_id uuid NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
            issued_at timestamptz NOT NULL DEFAULT now(),
            rotated_at timestamptz
        );
        CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id);

        CREATE TABLE api_tokens (
            id uuid PRIMARY KEY,
            org_id uuid NOT NULL REFERENCES orgs (id) ON DELETE CASCADE,
            user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            name text NOT NULL,
            role text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
            token_hash bytea NOT NULL UNIQUE,       -- sha256 of the whole token; the token is shown once
            prefix text NOT NULL,                   -- first characters, to recognise a token in lists
            created_at timestamptz NOT NULL DEFAULT now(),
            expires_at timestamptz NOT NULL,
            revoked_at timestamptz,
            last_used_at timestamptz
        );
        CREATE INDEX api_tokens_org_user ON api_tokens (org_id, user_id);

        CREATE TABLE audit_log (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            event_id uuid UNIQUE,                   -- set for entries consumed from RabbitMQ (idempotency)
            org_id uuid,
            actor text NOT NULL,
            action text NOT NULL,
            target text,
            details jsonb NOT NULL DEFAULT '{}'::jsonb,
            source text NOT NULL DEFAULT 'user',
            at timestamptz NOT NULL DEFAULT now()
        );
        CREATE INDEX audit_log_org_at ON audit_log (org_id, at DESC, id DESC);
        CREATE INDEX audit_log_org_actor_at ON audit_log (org_id, actor, at DESC);
        CREATE INDEX audit_log_org_action_at ON audit_log (org_id, action, at DESC);
        """
    )


def downgrade() -> None:
    # Forward-only: roll back by writing a new migration.
    pass
