-- Version 1: the Storage catalog (buckets, tables, metadata, column types, files with their
-- content in chunks, states). Runs with search_path = dockless, inside the migration's
-- transaction. Each Storage table's rows live in a table t<seq> (columns c0..cN text, plus
-- _timestamp), created by the backend; a full load writes a new t<seq> and retires the old
-- one, dropped by a later write once no reader can still need it.
CREATE TABLE buckets (
    id text PRIMARY KEY,
    created bigint NOT NULL
);
CREATE SEQUENCE table_seq;
CREATE TABLE tables (
    id text PRIMARY KEY,
    bucket text NOT NULL REFERENCES buckets(id),
    seq bigint NOT NULL UNIQUE,
    columns text NOT NULL,
    primary_key text NOT NULL,
    created bigint NOT NULL,
    last_change bigint NOT NULL,
    last_import bigint NOT NULL,
    rows bigint NOT NULL DEFAULT 0
);
CREATE TABLE retired_tables (
    name text PRIMARY KEY,
    retired bigint NOT NULL
);
CREATE TABLE metadata (
    table_id text NOT NULL,
    column_name text NOT NULL,
    key text NOT NULL,
    value text NOT NULL,
    provider text NOT NULL,
    timestamp bigint NOT NULL,
    ord bigserial NOT NULL,
    PRIMARY KEY (table_id, column_name, key, provider)
);
CREATE TABLE column_types (
    table_id text NOT NULL,
    column_name text NOT NULL,
    definition text NOT NULL,
    PRIMARY KEY (table_id, column_name)
);
CREATE TABLE files (
    id bigserial PRIMARY KEY,
    name text NOT NULL,
    created bigint NOT NULL,
    size bigint NOT NULL,
    is_public boolean NOT NULL,
    is_permanent boolean NOT NULL,
    is_encrypted boolean NOT NULL,
    is_sliced boolean NOT NULL,
    slices text NOT NULL
);
CREATE TABLE file_tags (
    file_id bigint NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    tag text NOT NULL,
    PRIMARY KEY (file_id, tag)
);
CREATE TABLE file_chunks (
    file_id bigint NOT NULL REFERENCES files(id) ON DELETE CASCADE,
    slice integer NOT NULL,
    seq integer NOT NULL,
    bytes bytea NOT NULL,
    PRIMARY KEY (file_id, slice, seq)
);
-- Chunks are mostly compressed or incompressible already: store them out of line, uncompressed.
ALTER TABLE file_chunks ALTER COLUMN bytes SET STORAGE EXTERNAL;
CREATE TABLE states (
    component text NOT NULL,
    config text NOT NULL,
    row_id text NOT NULL,
    value text NOT NULL,
    PRIMARY KEY (component, config, row_id)
);
