
/* a job's source is counted apart from its mapping */
ALTER TABLE acme_migrate.reconcile_runs ADD COLUMN mapped_rows bigint;
COMMENT ON COLUMN acme_migrate.reconcile_runs.mapped_rows IS
	'rows the job''s mapping gave (NULL for ad hoc and sampled runs); source_rows counts the source through the filter without the mapping, and a run where the two differ is not equal';
