
/* jobs remember the search_path their SQL was written under */
ALTER TABLE acme_migrate.jobs ADD COLUMN search_path text;
COMMENT ON COLUMN acme_migrate.jobs.search_path IS
	'search_path of the session that created the job; its mapping, filter and other SQL are resolved with it, as its owner, whoever runs the job';
