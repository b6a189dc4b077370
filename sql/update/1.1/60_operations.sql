/*
 * Operations (issue 10, items 2 to 6): the catalog survives pg_dump and
 * pg_restore, pgTAP assertions in one line, and metrics for scraping.
 */

/*
 * pg_dump / pg_restore.  Every catalog table is marked with
 * pg_extension_config_dump, so its rows are dumped; the identity sequences
 * behind jobs.job_id, rejects.reject_id, errors.error_id and
 * reconcile_runs.run_id were not (capture_log.seq is marked in the online
 * part), so a restored catalog handed out ids that were already taken.
 * Every sequence owned by a column of a table of the extension is marked
 * here, whichever part created it; a sequence marked already is marked
 * again, which changes nothing.
 */
DO $$
DECLARE
	seq pg_catalog.regclass;
BEGIN
	FOR seq IN
		SELECT s.oid::pg_catalog.regclass
		  FROM pg_catalog.pg_class s
		  JOIN pg_catalog.pg_depend d
			ON d.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
		   AND d.objid OPERATOR(pg_catalog.=) s.oid
		   AND d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_class'::pg_catalog.regclass
		   AND d.deptype OPERATOR(pg_catalog.=) ANY (ARRAY['a', 'i']::"char"[])
		  JOIN pg_catalog.pg_class t ON t.oid OPERATOR(pg_catalog.=) d.refobjid
		 WHERE s.relkind OPERATOR(pg_catalog.=) 'S'
		   AND t.relnamespace OPERATOR(pg_catalog.=) 'acme_migrate'::pg_catalog.regnamespace
		 ORDER BY s.oid
	LOOP
		PERFORM pg_catalog.pg_extension_config_dump(seq, '');
	END LOOP;
END
$$;

/*
 * pgTAP helpers.  Each returns one pgTAP result: through pgTAP's own ok()
 * and diag() when pgTAP is installed and planned in this session, so that
 * numbering and plan() work; otherwise a TAP line numbered by a counter of
 * this session (acme_migrate_tap.tests_run).  Neither trusts the caller's
 * search_path: pgTAP is found in pg_proc by name and argument types.
 */

/* The schema of a usable pgTAP (ok(boolean, text), diag(text), a plan), or NULL. */
CREATE FUNCTION acme_migrate.tap_schema()
RETURNS name
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT n.nspname
	  FROM pg_catalog.pg_proc o
	  JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) o.pronamespace
	 WHERE o.proname OPERATOR(pg_catalog.=) 'ok'
	   AND o.proargtypes OPERATOR(pg_catalog.=) '16 25'::pg_catalog.oidvector
	   AND o.prorettype OPERATOR(pg_catalog.=) 'pg_catalog.text'::pg_catalog.regtype
	   AND EXISTS (SELECT FROM pg_catalog.pg_proc g
				   WHERE g.pronamespace OPERATOR(pg_catalog.=) o.pronamespace
					 AND g.proname OPERATOR(pg_catalog.=) 'diag'
					 AND g.proargtypes OPERATOR(pg_catalog.=) '25'::pg_catalog.oidvector)
	   -- plan() or no_plan() made pgTAP's test cache in this session
	   AND pg_catalog.to_regclass('pg_temp.__tcache__') IS NOT NULL
	 ORDER BY EXISTS (SELECT FROM pg_catalog.pg_extension e
					  WHERE e.extname OPERATOR(pg_catalog.=) 'pgtap'
						AND e.extnamespace OPERATOR(pg_catalog.=) o.pronamespace) DESC,
			  n.nspname
	 LIMIT 1
$$;
COMMENT ON FUNCTION acme_migrate.tap_schema() IS
	'schema of the pgTAP whose ok(boolean, text) and diag(text) the pgTAP helpers call: pgTAP installed and planned in this session (the pgtap extension first), NULL when there is none';

/* One TAP result: through pgTAP when it is there, else a line of our own. */
CREATE FUNCTION acme_migrate.tap_result(passed boolean, description text,
										diagnostics text)
RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	tap name := acme_migrate.tap_schema();
	n integer;
	result text;
	diag_text text;
BEGIN
	IF tap IS NOT NULL THEN
		/*
		 * pgTAP's functions call one another unqualified: they run with its
		 * schema in search_path, for this call only (SET LOCAL inside a
		 * function with a SET clause ends with the function).
		 */
		PERFORM pg_catalog.set_config('search_path',
			'pg_catalog, ' OPERATOR(pg_catalog.||) pg_catalog.quote_ident(tap)
			OPERATOR(pg_catalog.||) ', pg_temp', true);
		EXECUTE pg_catalog.format('SELECT %I.ok($1, $2)', tap)
			INTO result USING passed, description;
		IF NOT passed AND diagnostics IS NOT NULL THEN
			EXECUTE pg_catalog.format('SELECT %I.diag($1)', tap)
				INTO diag_text USING diagnostics;
			result := result OPERATOR(pg_catalog.||) E'\n' OPERATOR(pg_catalog.||) diag_text;
		END IF;
		RETURN result;
	END IF;

	n := COALESCE(NULLIF(pg_catalog.current_setting('acme_migrate_tap.tests_run', true), ''),
				  '0')::integer OPERATOR(pg_catalog.+) 1;
	PERFORM pg_catalog.set_config('acme_migrate_tap.tests_run', n::text, false);
	result := CASE WHEN passed THEN 'ok ' ELSE 'not ok ' END
		OPERATOR(pg_catalog.||) n
		OPERATOR(pg_catalog.||) COALESCE(' - ' OPERATOR(pg_catalog.||) description, '');
	IF NOT passed THEN
		result := result OPERATOR(pg_catalog.||) E'\n# Failed test '
			OPERATOR(pg_catalog.||) n
			OPERATOR(pg_catalog.||) COALESCE(': "' OPERATOR(pg_catalog.||) description
											 OPERATOR(pg_catalog.||) '"', '');
		IF diagnostics IS NOT NULL THEN
			result := result OPERATOR(pg_catalog.||) E'\n'
				OPERATOR(pg_catalog.||) pg_catalog.regexp_replace(diagnostics, '^', '# ', 'gn');
		END IF;
	END IF;
	RETURN result;
END
$$;
COMMENT ON FUNCTION acme_migrate.tap_result(boolean, text, text) IS
	'one pgTAP result line (with diagnostics when it failed): through pgTAP''s ok() and diag() when pgTAP is planned in this session, else numbered by the session counter acme_migrate_tap.tests_run';

CREATE FUNCTION acme_migrate_is_done(job text, description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	j acme_migrate.jobs;
	descr text := COALESCE(description,
		pg_catalog.format('migration job "%s" is done', job));
BEGIN
	SELECT * INTO j FROM acme_migrate.jobs
	 WHERE job_name OPERATOR(pg_catalog.=) job;
	IF NOT FOUND THEN
		RETURN acme_migrate.tap_result(false, descr,
			pg_catalog.format('    job "%s" does not exist', job));
	END IF;
	RETURN acme_migrate.tap_result(
		j.state OPERATOR(pg_catalog.=) ANY (ARRAY['done', 'cut_over']),
		descr,
		pg_catalog.concat_ws(E'\n',
			pg_catalog.format('    state: %s (done or cut_over expected)', j.state),
			pg_catalog.format('    rows read: %s of about %s, copied: %s, rejected: %s, batches: %s',
				j.rows_read, pg_catalog.round(GREATEST(j.rows_estimate, j.rows_read)),
				j.rows_copied, j.rows_rejected, j.batches_done),
			pg_catalog.format('    checkpoint: %s', COALESCE(j.last_key::text, 'none')),
			'    failure reason: ' OPERATOR(pg_catalog.||) j.failure_reason,
			'    last error: ' OPERATOR(pg_catalog.||) j.last_error));
END
$$;
COMMENT ON FUNCTION acme_migrate_is_done(text, text) IS
	'pgTAP assertion: ok when the job is done (or cut over), else not ok with its state, counts, checkpoint and last error; uses pgTAP''s ok() and diag() when pgTAP is planned in this session';

CREATE FUNCTION acme_migrate_is_reconciled(job text,
										   sample double precision DEFAULT NULL,
										   description text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY INVOKER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
	r record;
	first_keys text;
	descr text := COALESCE(description,
		pg_catalog.format('migration job "%s" is reconciled', job)
		OPERATOR(pg_catalog.||) CASE WHEN sample IS NOT NULL
			THEN pg_catalog.format(' (sample %s)', sample) ELSE '' END);
BEGIN
	BEGIN
		SELECT * INTO r FROM @extschema@.acme_migrate_reconcile(job, sample => sample);
	EXCEPTION WHEN OTHERS THEN
		RETURN acme_migrate.tap_result(false, descr,
			pg_catalog.format('    reconciliation failed: %s (SQLSTATE %s)', SQLERRM, SQLSTATE));
	END;
	IF r.equal THEN
		RETURN acme_migrate.tap_result(true, descr, NULL);
	END IF;
	SELECT pg_catalog.string_agg(pg_catalog.format('        %s %s', d.kind, d.key), E'\n'
								 ORDER BY d.diff_no)
	  INTO first_keys
	  FROM (SELECT kind, key, diff_no FROM acme_migrate.diffs
			 WHERE run_id OPERATOR(pg_catalog.=) r.run_id
			 ORDER BY diff_no LIMIT 5) d;
	RETURN acme_migrate.tap_result(false, descr,
		pg_catalog.concat_ws(E'\n',
			pg_catalog.format('    reconcile run %s%s: source rows %s, target rows %s',
				r.run_id, CASE WHEN sample IS NOT NULL THEN ' (estimated from the sample)' ELSE '' END,
				r.source_rows, r.target_rows),
			pg_catalog.format('    missing: %s, extra: %s, changed: %s',
				r.missing, r.extra, r.changed),
			CASE WHEN first_keys IS NOT NULL
				 THEN E'    first differences:\n' OPERATOR(pg_catalog.||) first_keys
			END,
			pg_catalog.format('    all of them: SELECT * FROM acme_migrate.diffs WHERE run_id = %s',
				r.run_id)));
END
$$;
COMMENT ON FUNCTION acme_migrate_is_reconciled(text, double precision, text) IS
	'pgTAP assertion: reconcile the job (every row, or a sample fraction) and return ok when source and target are equal, else not ok with the counts and the first differing keys; uses pgTAP''s ok() and diag() when pgTAP is planned in this session';

/*
 * Metrics: one row per job, numbers only, for scrapers (the Prometheus
 * postgres_exporter queries in contrib/postgres_exporter/acme_migrate.yaml)
 * and for \watch.
 */
CREATE VIEW acme_migrate.metrics WITH (security_invoker = true) AS
SELECT	p.job,
		p.state,
		p.rows_done,
		p.rows_total,
		COALESCE(p.rows_per_second, 0)::double precision AS rows_per_second,
		p.rejected,
		j.batches_done AS batches,
		COALESCE(pg_catalog.date_part('epoch', lb.duration), 0) AS last_batch_seconds,
		p.workers,
		COALESCE(p.capture_backlog, 0) AS capture_backlog,
		COALESCE(GREATEST(pg_catalog.date_part('epoch', p.capture_lag), 0), 0)
			AS capture_lag_seconds
FROM acme_migrate.progress p
JOIN acme_migrate.jobs j ON j.job_name OPERATOR(pg_catalog.=) p.job
LEFT JOIN LATERAL (
	SELECT b.duration
	FROM acme_migrate.batches b
	WHERE b.job_id OPERATOR(pg_catalog.=) j.job_id
	ORDER BY b.started_at DESC, b.batch_no DESC
	LIMIT 1
) lb ON true;
COMMENT ON VIEW acme_migrate.metrics IS
	'one row per job shaped for scraping: state, counters and gauges as plain numbers (seconds, not intervals; 0 where progress shows NULL)';
COMMENT ON COLUMN acme_migrate.metrics.job IS 'job name';
COMMENT ON COLUMN acme_migrate.metrics.state IS 'job state';
COMMENT ON COLUMN acme_migrate.metrics.rows_done IS 'source rows handled so far (copied + rejected)';
COMMENT ON COLUMN acme_migrate.metrics.rows_total IS 'rows to handle: the estimate, or rows_done once copied';
COMMENT ON COLUMN acme_migrate.metrics.rows_per_second IS 'copy rate over the last minute (0 when no batch ran in it)';
COMMENT ON COLUMN acme_migrate.metrics.rejected IS 'rows sent to acme_migrate.rejects so far';
COMMENT ON COLUMN acme_migrate.metrics.batches IS 'batches committed so far';
COMMENT ON COLUMN acme_migrate.metrics.last_batch_seconds IS 'duration of the latest batch in seconds (0 before the first)';
COMMENT ON COLUMN acme_migrate.metrics.workers IS 'background workers running the job now';
COMMENT ON COLUMN acme_migrate.metrics.capture_backlog IS 'captured source changes not applied yet (0 without capture)';
COMMENT ON COLUMN acme_migrate.metrics.capture_lag_seconds IS 'age in seconds of the oldest captured change not applied yet (0 when none)';
GRANT SELECT ON acme_migrate.metrics TO PUBLIC;
