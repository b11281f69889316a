-- Roles, database and TimescaleDB of the docker-compose stack; the compose twin of deploy/local/pg/bootstrap.sql.
-- Run once by the superuser on the first start of an empty data volume (pg/initdb.sh passes the passwords
-- as psql variables owner_password, writer_password, reader_password).
\set ON_ERROR_STOP on
SET client_min_messages = warning;

DO $$
BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mds_owner') THEN
    CREATE ROLE mds_owner;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mds_writer') THEN
    CREATE ROLE mds_writer;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mds_reader') THEN
    CREATE ROLE mds_reader;
  END IF;
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'mds_roles') THEN
    CREATE ROLE mds_roles;
  END IF;
END
$$;

-- Owner: owns database "mds" and schema public, runs the migrations and policies. Nothing privileged.
ALTER ROLE mds_owner  LOGIN PASSWORD :'owner_password'  NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
-- Writer (the sink): owns nothing, cannot bypass row-level security; the sink refuses to start otherwise.
ALTER ROLE mds_writer LOGIN PASSWORD :'writer_password' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
-- Reader: select only, through the policies the migrations create.
ALTER ROLE mds_reader LOGIN PASSWORD :'reader_password' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
-- Tenant credentials: creates, rotates and drops the login roles of `admin tenants reader` (roles_url).
-- CREATEROLE only, kept apart from the owner: on PostgreSQL 15 it can grant itself nearly anything,
-- so its credential stays with operators, never with a service.
ALTER ROLE mds_roles  LOGIN PASSWORD :'roles_password'  NOSUPERUSER NOBYPASSRLS NOCREATEDB CREATEROLE NOINHERIT NOREPLICATION;

SELECT 'CREATE DATABASE mds OWNER mds_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mds')
\gexec
ALTER DATABASE mds OWNER TO mds_owner;
REVOKE ALL ON DATABASE mds FROM PUBLIC;
GRANT CONNECT ON DATABASE mds TO mds_writer, mds_reader;

\connect mds
SET client_min_messages = warning;
-- Only a superuser may create the extension; `mds-sink admin migrate` uses it when it is there
-- (hypertables, compression) and falls back to plain tables when it is not.
CREATE EXTENSION IF NOT EXISTS timescaledb;
ALTER SCHEMA public OWNER TO mds_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
