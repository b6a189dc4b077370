/* acme_migrate 1.0 -> 1.1 */

-- complain if script is sourced in psql, rather than via CREATE EXTENSION
\echo Use "ALTER EXTENSION acme_migrate UPDATE TO '1.1'" to load this file. \quit

/*
 * Version 1.0 is released and its script (the parts in sql/ext) is never edited:
 * every change to the SQL objects from 1.0 on is made here, in parts
 * of sql/update/1.1, assembled in name order.  A fresh
 * CREATE EXTENSION runs the 1.0 script, then this one.
 */
