//! Coracle end-to-end tests, the fleet simulator and benchmarks. Grows with issues 3, 4 and 9.
