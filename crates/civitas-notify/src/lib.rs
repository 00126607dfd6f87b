//! Civitas Notify: the messages agencies send people, in the shape of GOV.UK Notify's v2
//! API so that Notify's client libraries work unchanged (issue 7). So far this crate holds
//! the template language ([`template`]); the services, keys, API and delivery come next.

pub mod template;
