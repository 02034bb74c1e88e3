// Package sqlobserve wraps a database/sql driver.Connector so that an
// Observer is told what the connections send: each statement's text as it
// is executed or prepared, and each transaction's BEGIN, COMMIT and
// ROLLBACK. Tests use it to see which statements a piece of the engine
// sends, and graft bench -stats to count round trips and commits at the
// driver.
//
// The connections pass every interface of the wrapped connection through,
// so database/sql talks to the server as it would without them. The
// wrapped connector's connections must implement the context interfaces
// lib/pq's do (QueryerContext, ExecerContext, ConnPrepareContext,
// ConnBeginTx, Pinger, SessionResetter, Validator, NamedValueChecker).
//
// It imports nothing of graft's.
package sqlobserve
