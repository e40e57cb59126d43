-- lorabench store schema, version 3 (STORE_SCHEMA_VERSION in store/store.h).
--
-- This file is the truth for the newest schema: a fresh database gets all of it in one
-- transaction at open, and PRAGMA user_version is then set to STORE_SCHEMA_VERSION. A
-- database made by an older build is brought up to date by the numbered migrations in
-- store/store.c instead; whoever changes this file adds the matching migration there.
--
-- Times are Unix seconds (REAL). Missing values are NULL (a zero-shot run has no rank, a
-- run that has not evaluated has no ROUGE), never 0, so averages and filters stay honest.

CREATE TABLE sweeps (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT NOT NULL,
    spec        TEXT NOT NULL,            -- the base spec with its grid, canonical JSON
    created_at  REAL NOT NULL
);

-- A sweep submitted to a Slurm cluster as a job array (lorabench sweep --slurm): task i
-- trains in its own workspace <dir>/task-<i>, so no database is written by two hosts; the
-- submitting workspace imports the finished tasks' runs. state: submitted until every task
-- has ended and been imported (merged), or cancelled (scancel).
CREATE TABLE cluster_jobs (
    sweep_id    INTEGER PRIMARY KEY REFERENCES sweeps (id) ON DELETE CASCADE,
    job_id      TEXT NOT NULL,            -- the job array's id (sbatch --parsable)
    dir         TEXT NOT NULL,            -- absolute path of the sweep's folder
    n_tasks     INTEGER NOT NULL,
    state       TEXT NOT NULL DEFAULT 'submitted'
                CHECK (state IN ('submitted', 'cancelled', 'merged')),
    created_at  REAL NOT NULL
);

-- Runs copied in from another workspace (lorabench import, a cluster sweep's tasks): the
-- source workspace's absolute path and the run's id there, so importing again adds nothing.
-- No foreign key on run_id: a deleted imported run stays deleted on the next import.
CREATE TABLE imports (
    source      TEXT NOT NULL,
    source_run  INTEGER NOT NULL,
    run_id      INTEGER NOT NULL,
    imported_at REAL NOT NULL,
    PRIMARY KEY (source, source_run)
);

-- AUTOINCREMENT so that a deleted run's id (and so its folder runs/<id>/) is never reused.
CREATE TABLE runs (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    name             TEXT NOT NULL,
    spec             TEXT NOT NULL,       -- canonical JSON, all defaults filled in
    method           TEXT NOT NULL CHECK (method IN ('none', 'lora', 'full', 'partial')),
    status           TEXT NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled',
                                       'interrupted')),
    base_model       TEXT,
    dataset          TEXT,
    created_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    -- The run's owner: while running its worker, while queued the process that queued it
    -- (a sweep driver, train --detach, resume). A process is named by its id and its start
    -- time (/proc/<pid>/stat field 22), so that a reused pid is not taken for the owner.
    pid              INTEGER,
    pid_start        INTEGER,
    -- the cgroup's OOM-kill count when the worker claimed the run: a worker found dead after
    -- it rose is reported as out of memory
    oom_kills        INTEGER,
    heartbeat        REAL,                -- last sign of life of the worker
    trainable_params INTEGER,
    total_params     INTEGER,
    r                INTEGER,
    alpha            REAL,
    targets          TEXT,                -- e.g. 'q,v'
    total_steps      INTEGER,
    step             INTEGER NOT NULL DEFAULT 0,   -- last step with stored metrics
    final_loss       REAL,
    tokens_per_s     REAL,
    peak_rss_mb      REAL,
    error            TEXT,
    tags             TEXT,                -- comma-separated
    notes            TEXT,
    -- A sweep is only a label on its runs: deleting it keeps the runs.
    sweep_id         INTEGER REFERENCES sweeps (id) ON DELETE SET NULL,
    pinned           INTEGER NOT NULL DEFAULT 0 CHECK (pinned IN (0, 1)),
    -- the precision the run's matrix products used (train.precision "auto" resolved)
    precision        TEXT CHECK (precision IN ('fp32', 'bf16')),
    -- The run's identity, which its folder (runs/<id>/RUN) and checkpoints carry too: a
    -- folder or checkpoint of another run is refused, never adopted. NULL in runs made
    -- before schema version 3.
    uuid             TEXT,
    spec_hash        TEXT                 -- sha256 of spec
);
CREATE INDEX runs_by_created ON runs (created_at);
CREATE INDEX runs_by_status ON runs (status, heartbeat);
CREATE INDEX runs_by_sweep ON runs (sweep_id);

-- One row per optimizer step. The key (run_id, step) serves both the curve of one run and
-- the TUI's "WHERE run_id = ? AND step > ?" poll; a resumed run rewrites the steps after
-- its checkpoint with INSERT OR REPLACE.
CREATE TABLE metrics (
    run_id        INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step          INTEGER NOT NULL,
    epoch         REAL,
    loss          REAL,
    lr            REAL,
    grad_norm     REAL,
    tokens_per_s  REAL,
    step_ms       REAL,
    rss_mb        REAL,
    tokens        INTEGER,               -- target+source tokens seen so far
    wall_s        REAL,                  -- seconds since the run started
    PRIMARY KEY (run_id, step)
) WITHOUT ROWID;

CREATE TABLE evals (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    step             INTEGER NOT NULL,
    split            TEXT NOT NULL,
    n                INTEGER NOT NULL,
    created_at       REAL NOT NULL,
    seconds          REAL,
    rouge1           REAL, rouge1_low REAL, rouge1_high REAL,
    rouge2           REAL, rouge2_low REAL, rouge2_high REAL,
    rougeL           REAL, rougeL_low REAL, rougeL_high REAL,
    rougeLsum        REAL, rougeLsum_low REAL, rougeLsum_high REAL,
    beams            INTEGER,
    max_new_tokens   INTEGER,
    length_penalty   REAL
);
CREATE INDEX evals_by_run ON evals (run_id, step);

CREATE TABLE samples (
    eval_id     INTEGER NOT NULL REFERENCES evals (id) ON DELETE CASCADE,
    idx         INTEGER NOT NULL,        -- position in the evaluated split
    source      TEXT,
    reference   TEXT,
    prediction  TEXT,
    rouge1      REAL,
    rouge2      REAL,
    rougeL      REAL,
    PRIMARY KEY (eval_id, idx)
) WITHOUT ROWID;

CREATE TABLE artifacts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id      INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    kind        TEXT NOT NULL,           -- adapter | model | checkpoint | log | ...
    path        TEXT NOT NULL,
    bytes       INTEGER,
    sha256      TEXT,
    step        INTEGER,
    created_at  REAL NOT NULL,
    UNIQUE (run_id, path)
);

-- What the run list shows and filters on: each run with its latest evaluation (highest
-- step, then newest) and derived columns. The list sorts and filters on this view only.
CREATE VIEW runs_view AS
SELECT r.*,
       e.rouge1 AS rouge1, e.rouge2 AS rouge2, e.rougeL AS rougeL, e.rougeLsum AS rougeLsum,
       e.step AS eval_step,
       CASE WHEN r.started_at IS NULL THEN NULL
            ELSE COALESCE(r.finished_at, r.heartbeat, r.started_at) - r.started_at END
           AS duration,
       CASE WHEN r.total_params > 0 THEN 100.0 * r.trainable_params / r.total_params END
           AS trainable_pct
FROM runs r
LEFT JOIN evals e ON e.id = (SELECT e2.id FROM evals e2 WHERE e2.run_id = r.id
                             ORDER BY e2.step DESC, e2.id DESC LIMIT 1);
