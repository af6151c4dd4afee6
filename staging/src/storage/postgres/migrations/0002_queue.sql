-- The job queue: jobs, the rows a job already stored, and its output as the worker saw it.
-- Kept in the Storage's database so that a job's output, state and end commit together.

CREATE TABLE jobs (
    id              bigserial PRIMARY KEY,
    status          text NOT NULL DEFAULT 'waiting'
                    CHECK (status IN ('waiting', 'processing', 'success', 'error',
                                      'terminating', 'terminated')),
    component_id    text NOT NULL,
    config_id       text,
    -- The job (job file, configuration, referenced files), sealed with the hosts' state key:
    -- the database never sees a configuration's secrets.
    document        text NOT NULL,
    attempt         integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL CHECK (max_attempts > 0),
    worker          text,
    host            text,
    lease_until     timestamptz,
    submitted_at    timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    -- Why the job ended as it did (the component's or the runner's message).
    message         text,
    -- The result object `dockless run --json` prints, once the worker has it.
    result          json,
    -- The attempt whose own transaction stored the job's output and ended it.
    committed_attempt integer
);

-- Keboola runs one job of a configuration at a time: a second waits. Enforced by the database
-- itself, so that it holds across every worker on every host.
CREATE UNIQUE INDEX jobs_one_per_config
    ON jobs (component_id, config_id)
    WHERE status IN ('processing', 'terminating') AND config_id IS NOT NULL;

CREATE INDEX jobs_waiting ON jobs (id) WHERE status = 'waiting';
CREATE INDEX jobs_leased ON jobs (lease_until)
    WHERE status IN ('processing', 'terminating');
CREATE INDEX jobs_status ON jobs (status, id);

-- Rows of a configuration with rows whose output is stored; a retry skips them. Their state
-- (sealed as stored state is) waits here until every row succeeded.
CREATE TABLE job_rows (
    job_id  bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    row_id  text NOT NULL,
    state   jsonb,
    attempt integer NOT NULL,
    PRIMARY KEY (job_id, row_id)
);

-- What the job printed (the runner's redacted log), in the order the worker received it.
CREATE TABLE job_logs (
    seq     bigserial PRIMARY KEY,
    job_id  bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt integer NOT NULL,
    at      timestamptz NOT NULL DEFAULT now(),
    text    text NOT NULL
);
CREATE INDEX job_logs_job ON job_logs (job_id, seq);

-- One value every host checks its state key against (a host with another key is refused
-- before it seals or unseals anything).
CREATE TABLE queue_settings (
    name  text PRIMARY KEY,
    value text NOT NULL
);
