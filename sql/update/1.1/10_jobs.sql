
/* jobs remember the search_path their SQL was written under */
ALTER TABLE acme_migrate.jobs ADD COLUMN search_path text;
COMMENT ON COLUMN acme_migrate.jobs.search_path IS
	'search_path of the session that created the job; its mapping, filter and other SQL are resolved with it, as its owner, whoever runs the job';

/* what the job's columns looked like when it was created */
ALTER TABLE acme_migrate.jobs ADD COLUMN shape text;
COMMENT ON COLUMN acme_migrate.jobs.shape IS
	'the columns the job reads and fills, as "name type COLLATE collation" in column order, when it was created; every batch compares the tables with it and fails the job if they changed';
