--
-- Names and discovery (issue 9, finding 10): depends_on is bound to the jobs
-- it named when the child was created, a job others depend on cannot be
-- dropped, and a job another role may not see "does not exist" for it, in
-- errors and NOTICEs alike, exactly as the catalog's row-level security
-- hides it.
--
CREATE EXTENSION IF NOT EXISTS acme_migrate;

-- run a statement; SQLSTATE, message, detail and hint instead of failing
CREATE FUNCTION sn_try(sql text) RETURNS text LANGUAGE plpgsql AS $$
DECLARE
	d text;
	h text;
BEGIN
	EXECUTE sql;
	RETURN 'ok';
EXCEPTION WHEN OTHERS THEN
	GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL, h = PG_EXCEPTION_HINT;
	RETURN SQLSTATE || ': ' || SQLERRM
		|| CASE WHEN d <> '' THEN ' / ' || d ELSE '' END
		|| CASE WHEN h <> '' THEN ' / ' || h ELSE '' END;
END
$$;
GRANT EXECUTE ON FUNCTION sn_try(text) TO PUBLIC;

CREATE ROLE regress_sn_alice LOGIN;
CREATE ROLE regress_sn_bob LOGIN;
CREATE ROLE regress_sn_carol LOGIN IN ROLE acme_migrate_admin;
-- dave has alice's privileges, erin is a member of alice without them
CREATE ROLE regress_sn_dave LOGIN IN ROLE regress_sn_alice;
CREATE ROLE regress_sn_erin LOGIN NOINHERIT IN ROLE regress_sn_alice;
CREATE SCHEMA sn AUTHORIZATION regress_sn_alice;
CREATE SCHEMA snb AUTHORIZATION regress_sn_bob;
CREATE SCHEMA snc AUTHORIZATION regress_sn_carol;
GRANT USAGE ON SCHEMA sn, snb, snc TO PUBLIC;

SET ROLE regress_sn_alice;
CREATE TABLE sn.src (id int PRIMARY KEY, v text);
INSERT INTO sn.src SELECT g, 'v' || g FROM generate_series(1, 30) g;
CREATE TABLE sn.dst_parent (LIKE sn.src INCLUDING ALL);
CREATE TABLE sn.dst_child (LIKE sn.src INCLUDING ALL);
CREATE TABLE sn.dst_other (LIKE sn.src INCLUDING ALL);
GRANT SELECT ON sn.src TO PUBLIC;
SELECT acme_migrate_create('sn_parent', 'sn.src', 'sn.dst_parent', batch_size => 10) > 0 AS parent;
SELECT acme_migrate_create('sn_child', 'sn.src', 'sn.dst_child', depends_on => '{sn_parent}') > 0 AS child;
SELECT acme_migrate_create('sn_other', 'sn.src', 'sn.dst_other') > 0 AS other;
-- the child is bound to the parent's id
SELECT c.depends_on, c.depends_on_ids = ARRAY[p.job_id] AS bound_to_parent
FROM acme_migrate.jobs c, acme_migrate.jobs p
WHERE c.job_name = 'sn_child' AND p.job_name = 'sn_parent';
-- the child waits for its parent, which alice may see: the NOTICE names it
SELECT acme_migrate_batch('sn_child');

-- a parent with dependents cannot be dropped; nothing changes
SELECT sn_try($$SELECT acme_migrate_drop('sn_parent')$$);
SELECT job_name, state FROM acme_migrate.jobs ORDER BY job_id;

-- bob sees none of alice's jobs, in the catalog ...
SET ROLE regress_sn_bob;
SELECT count(*) AS bob_sees FROM acme_migrate.jobs;
-- ... nor through any function: each answers as for a job that is not there
SELECT sn_try($$SELECT acme_migrate_batch('sn_parent')$$) AS batch;
SELECT sn_try($$SELECT acme_migrate_batch('sn_no_such_job')$$) AS batch_missing;
SELECT sn_try($$SELECT acme_migrate_drop('sn_parent')$$) AS drop;
SELECT sn_try($$SELECT acme_migrate_drop('sn_child')$$) AS drop_child;
SELECT sn_try($$SELECT acme_migrate_pause('sn_parent')$$) AS pause;
SELECT sn_try($$SELECT acme_migrate_alter('sn_parent', batch_size => 1)$$) AS alter;
SELECT sn_try($$SELECT acme_migrate_start('sn_parent')$$) AS start;
SELECT sn_try($$SELECT acme_migrate_resume('sn_parent')$$) AS resume;
SELECT sn_try($$SELECT acme_migrate_cancel('sn_parent')$$) AS cancel;
SELECT sn_try($$SELECT acme_migrate_wait('sn_parent')$$) AS wait;
SELECT sn_try($$SELECT * FROM acme_migrate_reconcile('sn_parent')$$) AS reconcile;
CALL acme_migrate_run('sn_parent');
-- nor as a parent of a job of his own
CREATE TABLE snb.dst (LIKE sn.src INCLUDING ALL);
SELECT sn_try($$SELECT acme_migrate_create('snb_child', 'sn.src', 'snb.dst', depends_on => '{sn_parent}')$$) AS create_child;
SELECT sn_try($$SELECT acme_migrate_create('snb_child', 'sn.src', 'snb.dst', depends_on => '{sn_no_such_job}')$$) AS create_child_missing;

-- a role with alice's privileges sees and uses her jobs, in SQL and in C alike;
-- a member without her privileges (NOINHERIT) does neither
SET ROLE regress_sn_dave;
SELECT count(*) AS dave_sees FROM acme_migrate.jobs;
SELECT acme_migrate_batch('sn_parent') AS dave_copies;
SET ROLE regress_sn_erin;
SELECT count(*) AS erin_sees FROM acme_migrate.jobs;
SELECT sn_try($$SELECT acme_migrate_batch('sn_parent')$$) AS erin_batch;

-- an admin sees every job, and may make one of its own depend on alice's
SET ROLE regress_sn_carol;
CREATE TABLE snc.dst (LIKE sn.src INCLUDING ALL);
SELECT count(*) AS carol_sees FROM acme_migrate.jobs;
SELECT acme_migrate_create('sn_carol_child', 'sn.src', 'snc.dst', depends_on => '{sn_parent}') > 0 AS carol_child;
SELECT acme_migrate_batch('sn_carol_child');
RESET ROLE;
-- once carol is no admin, her child's NOTICE no longer names alice's job
REVOKE acme_migrate_admin FROM regress_sn_carol;
SET ROLE regress_sn_carol;
SELECT acme_migrate_batch('sn_carol_child');
SELECT count(*) AS carol_sees FROM acme_migrate.jobs;
-- and alice is told of a dependent she may not see without its name
SET ROLE regress_sn_alice;
SELECT sn_try($$SELECT acme_migrate_drop('sn_child')$$) AS drop_child;
SELECT sn_try($$SELECT acme_migrate_drop('sn_parent')$$) AS drop_parent;
SELECT job_name FROM acme_migrate.jobs ORDER BY job_id;
SET ROLE regress_sn_carol;
SELECT acme_migrate_drop('sn_carol_child');

-- in the right order, they all go
SET ROLE regress_sn_alice;
SELECT acme_migrate_drop('sn_parent');
SELECT job_name FROM acme_migrate.jobs ORDER BY job_id;

-- bob takes the freed name; alice's other job is not affected, and alice
-- cannot bind a new child to bob's job of that name
SET ROLE regress_sn_bob;
CREATE TABLE snb.dst_parent (LIKE sn.src INCLUDING ALL);
SELECT acme_migrate_create('sn_parent', 'sn.src', 'snb.dst_parent') > 0 AS bob_parent;
SELECT acme_migrate_batch('sn_parent') AS bob_copies;
SELECT acme_migrate_batch('sn_parent') AS bob_finishes;
SET ROLE regress_sn_alice;
SELECT job_name, state, rows_copied FROM acme_migrate.jobs ORDER BY job_id;
SELECT sn_try($$SELECT acme_migrate_create('sn_child2', 'sn.src', 'sn.dst_child', depends_on => '{sn_parent}')$$) AS alice_child_of_bobs;
SELECT sn_try($$SELECT acme_migrate_batch('sn_parent')$$) AS alice_batch_bobs;
SELECT acme_migrate_batch('sn_other') AS alice_other;
SELECT job_name, state, rows_copied FROM acme_migrate.jobs ORDER BY job_id;

-- a job from 1.0 whose parent was gone when the names were bound by the
-- update (depends_on_ids holds NULL) fails clearly rather than waiting
RESET ROLE;
SELECT acme_migrate_create('sn_orphan', 'sn.src', 'sn.dst_child', depends_on => '{sn_other}') > 0 AS orphan;
UPDATE acme_migrate.jobs SET depends_on_ids = '{NULL}' WHERE job_name = 'sn_orphan';
SELECT sn_try($$SELECT acme_migrate_batch('sn_orphan')$$) AS orphan_batch;
SELECT acme_migrate_drop('sn_orphan');

-- a job whose owner was dropped (DROP ROLE cannot see it) runs as nobody:
-- batch, run, start and reconcile say so, and the job can be dropped
CREATE ROLE regress_sn_gone LOGIN;
GRANT SELECT ON sn.src TO regress_sn_gone;
CREATE TABLE sn.dst_gone (id int PRIMARY KEY, v text);
GRANT SELECT, INSERT, UPDATE ON sn.dst_gone TO regress_sn_gone;
SET ROLE regress_sn_gone;
SELECT acme_migrate_create('sn_gone', 'sn.src', 'sn.dst_gone') > 0 AS created;
RESET ROLE;
REVOKE ALL ON sn.src, sn.dst_gone FROM regress_sn_gone;
DROP ROLE regress_sn_gone;
SELECT regexp_replace(sn_try($$SELECT acme_migrate_batch('sn_gone')$$), 'OID [0-9]+', 'OID n') AS batch_of_gone;
\set VERBOSITY terse
CALL acme_migrate_run('sn_gone');
\set VERBOSITY default
SELECT regexp_replace(sn_try($$SELECT acme_migrate_start('sn_gone', workers => 1)$$), 'OID [0-9]+', 'OID n') AS start_of_gone;
SELECT regexp_replace(sn_try($$SELECT * FROM acme_migrate_reconcile('sn_gone')$$), 'OID [0-9]+', 'OID n') AS reconcile_of_gone;
SELECT (SELECT count(*) FROM sn.dst_gone) AS rows_written, acme_migrate_drop('sn_gone') AS dropped;

SELECT job_name, owner, state FROM acme_migrate.jobs
WHERE job_name LIKE 'sn%' ORDER BY job_id;
SELECT acme_migrate_drop(job_name) FROM acme_migrate.jobs WHERE job_name LIKE 'sn%';
DROP SCHEMA sn CASCADE;
DROP SCHEMA snb CASCADE;
DROP SCHEMA snc CASCADE;
DROP FUNCTION sn_try(text);
DROP ROLE regress_sn_alice, regress_sn_bob, regress_sn_carol, regress_sn_dave,
	regress_sn_erin;
