-- Models uploaded through the API (the shipped ones live in the model folder).
CREATE TABLE models (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL,
    card TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Labelled tensor sets: inputs and labels are .npy blobs.
CREATE TABLE datasets (
    name TEXT PRIMARY KEY,
    x_sha256 TEXT NOT NULL,
    y_sha256 TEXT NOT NULL,
    n INTEGER NOT NULL,
    x_shape TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- Evaluation jobs; `spec` is the validated request as JSON.
CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    model_sha256 TEXT NOT NULL,
    spec TEXT NOT NULL,
    status TEXT NOT NULL,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL,
    correct INTEGER NOT NULL DEFAULT 0,
    robust INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    report TEXT,
    adversarial_sha256 TEXT,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

-- The results of each finished chunk of a job, so that a job resumes where it stopped.
CREATE TABLE job_chunks (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    chunk INTEGER NOT NULL,
    samples TEXT NOT NULL,
    adversarial_sha256 TEXT NOT NULL,
    PRIMARY KEY (job_id, chunk)
);
