// Package nodelock decides which of the bootstrapper's two ways into a
// cluster the node takes. The init server (waiting for `cloister init`) and
// the join client (polling join services) run side by side; whichever first
// reaches its point of no return calls Acquire. Exactly one Acquire ever
// succeeds, in this process and, because the win is persisted as
// nodestate.Locked before Acquire returns, across restarts. The loser sees
// ErrTaken (and Taken is closed), and stops cleanly.
//
// The winner's prepare function runs under the lock, before the win is
// persisted: it saves the inputs the path needs to resume after a crash, so a
// persisted Locked always has them. If persisting the win fails, nobody has
// won and the lock is free again.
//
// The bootstrapper's main builds one Lock from the nodestate.Store it opened.
// Nothing here is secret; prepare may write secrets, which is its business.
package nodelock
