-- Roles and database of the local test stack (deploy/local/stack.sh).
-- Run by the superuser against database "postgres"; safe to run repeatedly.
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

-- Owner: owns database "mds" and runs migrations. CREATEDB so tests can make
-- throwaway databases; nothing else privileged.
ALTER ROLE mds_owner  LOGIN PASSWORD 'mds_owner'  NOSUPERUSER NOBYPASSRLS CREATEDB   NOCREATEROLE NOREPLICATION;
-- Application (sink) role and read-only role.
ALTER ROLE mds_writer LOGIN PASSWORD 'mds_writer' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
ALTER ROLE mds_reader LOGIN PASSWORD 'mds_reader' NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE NOREPLICATION;
-- Tenant credentials: creates, rotates and drops the login roles of `admin tenants reader` (roles_url).
-- CREATEROLE only, kept apart from the owner: on PostgreSQL 15 it can grant itself nearly anything,
-- so its credential stays with operators, never with a service.
ALTER ROLE mds_roles  LOGIN PASSWORD 'mds_roles'  NOSUPERUSER NOBYPASSRLS NOCREATEDB CREATEROLE NOINHERIT NOREPLICATION;

SELECT 'CREATE DATABASE mds OWNER mds_owner'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'mds')
\gexec
ALTER DATABASE mds OWNER TO mds_owner;
REVOKE ALL ON DATABASE mds FROM PUBLIC;
GRANT CONNECT ON DATABASE mds TO mds_writer, mds_reader;

\connect mds
SET client_min_messages = warning;
ALTER SCHEMA public OWNER TO mds_owner;
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
