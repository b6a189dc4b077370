
/*
 * Names and discovery (issue 9, finding 10).
 *
 * depends_on binds to the jobs it named when the child was created, by id:
 * a job created later under a dropped parent's name is not the parent.
 * acme_migrate_drop refuses to drop a job that others depend on.
 */
ALTER TABLE acme_migrate.jobs ADD COLUMN depends_on_ids bigint[];
COMMENT ON COLUMN acme_migrate.jobs.depends_on_ids IS
	'ids of the jobs depends_on named when the job was created, in the same order; the job waits for these jobs, whatever their names are now';

/*
 * Jobs of 1.0 named their parents only: bind each name once, now, to the
 * job of that name created before the child and visible to the child's
 * owner.  A name that no longer leads to such a job stays unbound (NULL):
 * the child then fails with a clear error instead of running on the state
 * of some other role's job.
 */
UPDATE acme_migrate.jobs c
   SET depends_on_ids = ARRAY(
		SELECT (SELECT p.job_id FROM acme_migrate.jobs p
				 WHERE p.job_name OPERATOR(pg_catalog.=) d.name
				   AND p.job_id OPERATOR(pg_catalog.<) c.job_id
				   AND (pg_catalog.pg_has_role(c.owner::pg_catalog.oid,
											   p.owner::pg_catalog.oid, 'USAGE')
						OR (EXISTS (SELECT FROM pg_catalog.pg_roles r
									 WHERE r.rolname OPERATOR(pg_catalog.=) 'acme_migrate_admin')
							AND pg_catalog.pg_has_role(c.owner::pg_catalog.oid,
													   'acme_migrate_admin', 'USAGE'))))
		  FROM pg_catalog.unnest(c.depends_on) WITH ORDINALITY AS d(name, n)
		 ORDER BY d.n)
 WHERE c.depends_on IS NOT NULL;

/*
 * Who sees a job: its owner, any role with the owner's privileges, and
 * superusers and members of acme_migrate_admin (with its privileges).  The C
 * functions apply this rule (has_privs_of_role) word for word, and answer
 * "does not exist" for a job it hides, so that neither the catalog nor an
 * error message tells another role's job is there.  1.0 compared the owner
 * with current_user exactly and took any membership of acme_migrate_admin.
 */
CREATE OR REPLACE FUNCTION acme_migrate.job_visible(job_owner regrole)
RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
	SELECT pg_catalog.pg_has_role(job_owner::pg_catalog.oid, 'USAGE')
		OR (EXISTS (SELECT FROM pg_catalog.pg_roles
					 WHERE rolname OPERATOR(pg_catalog.=) 'acme_migrate_admin')
			AND pg_catalog.pg_has_role('acme_migrate_admin', 'USAGE'))
$$;
COMMENT ON FUNCTION acme_migrate.job_visible(regrole) IS
	'row-level security predicate: true when the current role has the privileges of the job''s owner or of acme_migrate_admin (superusers have both); the C functions apply the same rule';
