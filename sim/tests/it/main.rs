//! Integration tests: each test starts its own simulator on a free port and talks to it over
//! real HTTP, as the notifier and ingress will.

mod callbacks;
mod cards;
mod contacts;
mod control;
mod faults;
mod helpers;
mod load;
mod media;
mod rate_limits;
mod record;
mod robot;
mod stream;
mod tokens;
mod webhook_robots;
