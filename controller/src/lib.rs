//! Coracle controller: keeps the fleet's state, serves images, drives rollouts.
//!
//! Built out by issue 5; today only the command-line shell exists.
