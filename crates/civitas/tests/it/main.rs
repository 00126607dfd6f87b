//! Civitas integration tests: each starts the real server on a random loopback port, on
//! SQLite and on PostgreSQL, and speaks to it with real clients (an HTTP client, the
//! `civitas` binary itself, and a headless browser).
//!
//! PostgreSQL tests run when `CIVITAS_TEST_POSTGRES_URL` names a server where the test may
//! create databases; browser tests when `CIVITAS_TEST_CHROMEDRIVER` and `CIVITAS_TEST_AXE`
//! are set; Notify's client tests when `CIVITAS_TEST_NOTIFY_PYTHON` names the folder Notify's
//! Python client is installed in and `CIVITAS_TEST_NOTIFY_NODE` the `node_modules` folder
//! holding its Node client; the S3 upload test when `CIVITAS_TEST_S3` names the folder
//! moto (an S3-compatible server, from PyPI) is installed in. `scripts/test` sets them all and
//! `CIVITAS_TEST_REQUIRE_ALL=1`, which turns a missing one into a failure instead of a skip.

mod support;

mod authz;
mod browser;
mod cli;
mod consent;
mod exchange;
mod gateways;
mod http;
mod identity;
mod ledger;
mod notify;
mod notify_channels;
mod notify_templates;
mod oidc;
mod services;
