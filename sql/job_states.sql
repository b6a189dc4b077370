--
-- One definition of a job's states: acme_migrate.job_states() shows the
-- library's; the catalog's CHECK constraint (PostgreSQL's own record of
-- what the table accepts) must list exactly the same names, and entering
-- a state does to finished_at what job_states() says.
--
CREATE EXTENSION acme_migrate;
SELECT * FROM acme_migrate.job_states() ORDER BY state;

-- the names the CHECK constraint of acme_migrate.jobs.state allows
CREATE TEMP TABLE check_states AS
SELECT m[1] AS state
FROM pg_constraint c, regexp_matches(pg_get_constraintdef(c.oid), '''(\w+)''', 'g') m
WHERE c.conrelid = 'acme_migrate.jobs'::regclass AND c.conname = 'jobs_state_check';
SELECT (SELECT count(*) FROM check_states) AS in_check,
	(SELECT count(*) FROM (SELECT state FROM check_states
		EXCEPT SELECT state FROM acme_migrate.job_states()) x) AS check_only,
	(SELECT count(*) FROM (SELECT state FROM acme_migrate.job_states()
		EXCEPT SELECT state FROM check_states) x) AS library_only;

-- finished_at: set by done and cancelled, not by paused
CREATE TABLE js_src (id int PRIMARY KEY);
INSERT INTO js_src SELECT generate_series(1, 10);
CREATE TABLE js_a (id int PRIMARY KEY);
CREATE TABLE js_b (id int PRIMARY KEY);
SELECT acme_migrate_create('js_a', 'js_src', 'js_a');
SELECT acme_migrate_create('js_b', 'js_src', 'js_b');
CALL acme_migrate_run('js_a');
SELECT acme_migrate_pause('js_b');
SELECT job_name, state, finished_at IS NOT NULL AS finished FROM acme_migrate.jobs ORDER BY 1;
SELECT acme_migrate_cancel('js_b');
SELECT job_name, state, finished_at IS NOT NULL AS finished FROM acme_migrate.jobs ORDER BY 1;
-- every job's finished_at agrees with job_states()
SELECT j.job_name FROM acme_migrate.jobs j JOIN acme_migrate.job_states() s USING (state)
WHERE (s.finished_at = 'set') <> (j.finished_at IS NOT NULL);

DROP TABLE js_src, js_a, js_b;
DROP EXTENSION acme_migrate;
