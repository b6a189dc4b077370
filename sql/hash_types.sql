--
-- acme_migrate_row_hash over every kind of type, TOAST, and copies
--
CREATE EXTENSION IF NOT EXISTS acme_migrate;
CREATE EXTENSION IF NOT EXISTS hstore;
CREATE EXTENSION IF NOT EXISTS citext;
SET client_min_messages = warning;
CREATE SCHEMA hash_types;
SET search_path = hash_types, public;

CREATE TYPE color AS ENUM ('red', 'green', 'blue');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE inner_t AS (x integer, y text[]);
CREATE TYPE outer_t AS (i inner_t, c color, z numeric);
CREATE TYPE floatrange AS RANGE (subtype = float8);

-- one value per type: hashes are pinned (byte order is canonical) and every
-- value differs from its neighbour
CREATE TABLE typed (n serial, name text, h uuid);
CREATE FUNCTION add(name text, v anyelement) RETURNS void LANGUAGE sql AS
$$ INSERT INTO hash_types.typed (name, h) VALUES (name, public.acme_migrate_row_hash(ROW(v))) $$;
SELECT add('int2', 7::int2), add('int4', 7::int4), add('int8', 7::int8),
       add('oid', 7::oid), add('bool', true), add('char', 'c'::"char"),
       add('float4', 1.5::float4), add('float8', 1.5::float8),
       add('numeric', 1.50::numeric), add('money', 1.5::money),
       add('date', '2024-02-29'::date), add('time', '12:34:56'::time),
       add('timetz', '12:34:56+02'::timetz),
       add('timestamp', '2024-02-29 12:34:56.123456'::timestamp),
       add('timestamptz', '2024-02-29 12:34:56.123456+00'::timestamptz),
       add('interval', '1 mon 2 days 03:04:05'::interval),
       add('text', 'text ✓'::text), add('varchar', 'text ✓'::varchar(10)),
       add('bpchar', 'ab'::char(4)), add('name', 'a name'::name),
       add('bytea', '\x00ff'::bytea), add('uuid', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid),
       add('json', '{"a": [1, 2.0]}'::json), add('jsonb', '{"a": [1, 2.0]}'::jsonb),
       add('xml', '<a b="c">d</a>'::xml), add('tsvector', 'a:1 fat:2 cat:3'::tsvector),
       add('tsquery', 'fat & (cat | rat)'::tsquery), add('jsonpath', '$.a[*] ? (@ > 1)'::jsonpath),
       add('inet', '192.168.0.1/24'::inet), add('cidr', '10.0.0.0/8'::cidr),
       add('macaddr', '08:00:2b:01:02:03'::macaddr), add('bit', B'1011'::bit(4)),
       add('varbit', B'10110'::varbit), add('point', '(1.5,2)'::point),
       add('box', '((0,0),(1,1))'::box), add('pg_lsn', '16/B374D848'::pg_lsn),
       add('int4[]', ARRAY[1, NULL, 3]), add('text[][]', ARRAY[['a', 'b'], ['c', NULL]]),
       add('int4[] lbound', '[0:2]={1,2,3}'::int4[]), add('empty array', '{}'::int4[]),
       add('enum', 'green'::color), add('enum[]', ARRAY['red', 'blue']::color[]),
       add('domain', 5::posint), add('composite', ROW(1, ARRAY['p', 'q'])::inner_t),
       add('nested composite', ROW(ROW(1, ARRAY['p']), 'blue', 2.5)::outer_t),
       add('composite[]', ARRAY[ROW(1, NULL)::inner_t, NULL]),
       add('int4range', int4range(1, 10)), add('empty range', 'empty'::int4range),
       add('unbounded range', '[5,)'::int8range), add('tstzrange', tstzrange('2024-01-01', 'infinity')),
       add('user range', floatrange(0.5, 1.5, '[]')),
       add('multirange', '{[1,3), [5,7)}'::int4multirange),
       add('hstore', 'a=>1, b=>NULL'::hstore), add('citext', 'MiXeD'::citext);
SELECT name, h FROM typed ORDER BY n;
-- the hash covers values, not type names: types sharing a representation
-- hash alike (everything else differs)
SELECT string_agg(name, ', ' ORDER BY n) AS same_hash
FROM typed GROUP BY h HAVING count(*) > 1 ORDER BY 1;

-- domains hash as their base type, citext as the text it stores
SELECT acme_migrate_row_hash(ROW(5::posint)) = acme_migrate_row_hash(ROW(5)) AS domain_is_base,
       acme_migrate_row_hash(ROW('MiXeD'::citext)) = acme_migrate_row_hash(ROW('MiXeD'::text)) AS citext_is_text,
       acme_migrate_row_hash(ROW('MiXeD'::citext)) <> acme_migrate_row_hash(ROW('mixed'::citext)) AS citext_case;
-- ranges: canonical forms compare equal, bounds matter
SELECT acme_migrate_row_hash(ROW(int4range(1, 10))) = acme_migrate_row_hash(ROW(int4range(0, 9, '(]'))) AS canonical_range,
       acme_migrate_row_hash(ROW(floatrange(1, 2, '[)'))) <> acme_migrate_row_hash(ROW(floatrange(1, 2, '[]'))) AS range_bounds,
       acme_migrate_row_hash(ROW('empty'::int4range)) <> acme_migrate_row_hash(ROW(NULL::int4range)) AS empty_not_null;
-- enum hashes follow the label, not the internal OID
CREATE TYPE color2 AS ENUM ('blue', 'green');
SELECT acme_migrate_row_hash(ROW('green'::color)) = acme_migrate_row_hash(ROW('green'::color2)) AS enum_label;

--
-- TOAST: compression and out-of-line storage never change a hash
--
CREATE TABLE toast_compressed (id int, v text);
CREATE TABLE toast_external (id int, v text);
ALTER TABLE toast_external ALTER COLUMN v SET STORAGE EXTERNAL;
CREATE TABLE toast_main (id int, v text);
ALTER TABLE toast_main ALTER COLUMN v SET STORAGE MAIN;
INSERT INTO toast_compressed VALUES (1, repeat('x', 1000000)), (2, repeat('ab', 3000));
-- fresh values: INSERT ... SELECT would keep the compressed datum
INSERT INTO toast_external VALUES (1, repeat('x', 1000000)), (2, repeat('ab', 3000));
INSERT INTO toast_main SELECT * FROM toast_compressed;
SELECT c.id, pg_column_compression(c.v) AS c_compression, pg_column_size(c.v) < 20000 AS c_small,
       pg_column_compression(e.v) AS e_compression, pg_column_size(e.v) AS e_size,
       acme_migrate_row_hash(c) = acme_migrate_row_hash(e) AS compressed_vs_external,
       acme_migrate_row_hash(c) = acme_migrate_row_hash(m) AS compressed_vs_main,
       acme_migrate_row_hash(c) = acme_migrate_row_hash(ROW(c.id, c.v || '')) AS compressed_vs_memory
FROM toast_compressed c JOIN toast_external e USING (id) JOIN toast_main m USING (id)
ORDER BY c.id;
SELECT acme_migrate_row_hash(ROW(repeat('x', 1000000))) <> acme_migrate_row_hash(ROW(repeat('x', 999999) || 'y')) AS long_values_differ;

--
-- a copy made with CREATE TABLE AS hashes the same, dropped columns and all
--
CREATE TABLE orig (id int PRIMARY KEY, gone text, a numeric, b float8[], c outer_t,
                   d jsonb, e tstzrange, f color, g bytea, h hstore);
INSERT INTO orig
SELECT i, 'dropped', i / 7.0, ARRAY[i, '-0'::float8, 'NaN'], ROW(ROW(i, ARRAY['v' || i]), 'red', i)::outer_t,
       jsonb_build_object('i', i, 's', repeat('é', i)), tstzrange(now(), NULL),
       CASE WHEN i % 3 = 0 THEN NULL ELSE 'blue' END::color,
       decode(md5(i::text), 'hex'), hstore('k', i::text)
FROM generate_series(1, 200) i;
ALTER TABLE orig DROP COLUMN gone;
CREATE TABLE copy1 AS SELECT * FROM orig;
SELECT count(*) AS rows,
       count(*) FILTER (WHERE acme_migrate_row_hash(o) = acme_migrate_row_hash(k)) AS equal
FROM orig o JOIN copy1 k USING (id);
SELECT (SELECT hash FROM acme_migrate_table_hash('orig')) =
       (SELECT hash FROM acme_migrate_table_hash('copy1')) AS table_hash_equal;
UPDATE copy1 SET b[2] = 0.0 WHERE id = 17;
SELECT id FROM orig o JOIN copy1 k USING (id)
WHERE acme_migrate_row_hash(o) <> acme_migrate_row_hash(k);

-- pseudo-types cannot be hashed
SELECT acme_migrate_row_hash(ROW(NULL::void));

DROP SCHEMA hash_types CASCADE;
