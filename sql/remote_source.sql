--
-- A source on another server (src/remote.c): what runs without a second
-- server.  The two-server behaviour is in test/t/054_remote_source.pl.
--
CREATE EXTENSION IF NOT EXISTS acme_migrate;
SET client_min_messages = warning;

-- acme_migrate.row_hash_half: the halves of a row hash as bigints, checked
-- against the hex digits of the uuid read by PostgreSQL itself
SELECT n, acme_migrate.row_hash_half(h, 0) = 4822678189205111 AS pinned,
       acme_migrate.row_hash_half(h, 0) =
         ('x' || substr(replace(h::text, '-', ''), 1, 16))::bit(64)::bigint AS first_ok,
       acme_migrate.row_hash_half(h, 1) =
         ('x' || substr(replace(h::text, '-', ''), 17, 16))::bit(64)::bigint AS second_ok
  FROM (VALUES (1, '00112233-4455-6677-8899-aabbccddeeff'::uuid),
               (2, acme_migrate_row_hash(ROW(1, 'a'))),
               (3, 'ffffffff-ffff-ffff-8000-000000000000'::uuid)) v(n, h)
 ORDER BY n;
SELECT acme_migrate.row_hash_half('00112233-4455-6677-8899-aabbccddeeff', 2);
SELECT acme_migrate.row_hash_half(NULL, 0) IS NULL AS strict;

-- the columns of reconcile_runs that say how a foreign source was read
SELECT attname, format_type(atttypid, atttypmod)
  FROM pg_attribute
 WHERE attrelid = 'acme_migrate.reconcile_runs'::regclass AND attname LIKE 'remote%'
 ORDER BY attnum;

-- a local source: remote_mode stays NULL
CREATE TABLE remote_src (id integer PRIMARY KEY, v text);
CREATE TABLE remote_tgt (id integer PRIMARY KEY, v text);
INSERT INTO remote_src VALUES (1, 'a'), (2, 'b');
INSERT INTO remote_tgt VALUES (1, 'a');
SELECT missing FROM acme_migrate_reconcile(source => 'remote_src', target => 'remote_tgt');
SELECT remote_mode IS NULL AS local, remote_rows IS NULL AS not_counted, remote_note
  FROM acme_migrate.reconcile_runs ORDER BY run_id DESC LIMIT 1;
SHOW acme_migrate.remote_hashes;
DROP TABLE remote_src, remote_tgt;
