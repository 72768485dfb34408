//! Runs each store test on both backends: `store_tests!` turns `fn name(store) { … }` into a
//! module `name` with a `sqlite` test (in-memory) and a `postgres` test (a fresh database on
//! the PostgreSQL server the test process starts; skipped, saying so, without one).

use super::Store;

macro_rules! store_tests {
    ($(fn $name:ident($store:ident) $body:block)*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn sqlite() {
                let $store = $crate::store::Store::in_memory().expect("in-memory SQLite opens");
                $body
            }

            #[test]
            fn postgres() {
                let Some($store) = $crate::store::test_backends::postgres_store() else {
                    return;
                };
                $body
            }
        }
    )*};
}
pub(crate) use store_tests;

/// A migrated store on a new database of the shared test server, or `None` (after printing
/// why) when PostgreSQL is not installed.
pub fn postgres_store() -> Option<Store> {
    postgres_url().map(|url| Store::connect(&url).expect("the test database accepts the store"))
}

/// The URL of a new database on the shared test server (`None`: not installed).
pub fn postgres_url() -> Option<String> {
    coracle_tests::postgres::shared_database()
        .unwrap_or_else(|err| panic!("cannot start the test PostgreSQL: {err:#}"))
}
