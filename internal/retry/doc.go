// Package retry runs an attempt again and again, with exponential backoff,
// jitter and a deadline per attempt, until it succeeds, fails permanently, or
// the caller's context ends. The disk-mapper's rejoin client and the
// bootstrapper's join client poll join services with it.
//
// It trusts nothing it runs: an attempt's error decides only whether to try
// again (errors wrapped with Permanent stop at once). Sleeps select on the
// context, so cancelling it ends Do promptly, even in the middle of a long
// backoff.
package retry
