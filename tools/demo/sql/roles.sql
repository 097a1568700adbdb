-- Sample data of the Postern demo (tools/demo), loaded by psql on every
-- start: every statement is idempotent, so a second run (or one after a
-- failed first run) converges on the same state.
-- Roles and databases, as the bootstrap superuser in `postgres`; the
-- psql variable writer_pw is demo_writer's password.
SELECT 'CREATE ROLE reader NOLOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reader') \gexec
SELECT 'CREATE ROLE writer NOLOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'writer') \gexec
SELECT 'CREATE ROLE demo_reader LOGIN IN ROLE reader' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'demo_reader') \gexec
SELECT 'CREATE ROLE demo_writer LOGIN IN ROLE writer' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'demo_writer') \gexec
SET password_encryption = 'scram-sha-256';
ALTER ROLE demo_writer PASSWORD :'writer_pw';
SELECT 'CREATE DATABASE shop' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'shop') \gexec
SELECT 'CREATE DATABASE analytics' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'analytics') \gexec
-- Only the group roles (and the superuser) may connect.
REVOKE CONNECT ON DATABASE shop, analytics FROM PUBLIC;
GRANT CONNECT ON DATABASE shop, analytics TO reader, writer;
