//! `Tx`: the store's view of one transaction, on either backend. Each call names its step,
//! which a failure carries (`StoreError::Query`).

use super::backend::{DbError, Dialect, Row, Session, Value};
use super::StoreError;

pub(crate) struct Tx<'a> {
    session: &'a mut dyn Session,
}

impl<'a> Tx<'a> {
    pub(super) fn new(session: &'a mut dyn Session) -> Self {
        Self { session }
    }

    pub fn dialect(&self) -> Dialect {
        self.session.dialect()
    }

    /// Runs a statement; returns the number of rows it changed.
    pub fn execute(
        &mut self,
        step: &'static str,
        sql: &str,
        params: &[Value],
    ) -> Result<u64, StoreError> {
        self.session.execute(sql, params).map_err(query(step))
    }

    /// Runs several statements without parameters.
    pub fn execute_batch(&mut self, step: &'static str, sql: &str) -> Result<(), StoreError> {
        self.session.execute_batch(sql).map_err(query(step))
    }

    /// Every row of a query, each mapped by `map`.
    pub fn query<T>(
        &mut self,
        step: &'static str,
        sql: &str,
        params: &[Value],
        map: impl FnMut(&Row) -> Result<T, DbError>,
    ) -> Result<Vec<T>, StoreError> {
        self.session
            .query(sql, params)
            .and_then(|rows| rows.iter().map(map).collect())
            .map_err(query(step))
    }

    /// The first row of a query, if there is one.
    pub fn query_opt<T>(
        &mut self,
        step: &'static str,
        sql: &str,
        params: &[Value],
        map: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<Option<T>, StoreError> {
        self.session
            .query(sql, params)
            .and_then(|rows| rows.first().map(map).transpose())
            .map_err(query(step))
    }

    /// The first row of a query that always returns one (an aggregate, `RETURNING`).
    pub fn query_one<T>(
        &mut self,
        step: &'static str,
        sql: &str,
        params: &[Value],
        map: impl FnOnce(&Row) -> Result<T, DbError>,
    ) -> Result<T, StoreError> {
        self.query_opt(step, sql, params, map)?
            .ok_or_else(|| query(step)(DbError::NoRow))
    }
}

fn query(step: &'static str) -> impl Fn(DbError) -> StoreError {
    move |source| StoreError::Query { step, source }
}
