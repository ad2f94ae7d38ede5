// Package cryptsetup keeps a node's state disk in LUKS2 and refuses any
// header it did not write itself.
//
// disk-mapper calls it once per boot: Format for a fresh disk (with a
// one-time passphrase), Open for an existing one, CheckKey to try a key
// from the join service or the operator, Rekey to move from the one-time
// passphrase to the derived key, and Activate to map the disk. Format
// writes exactly one header shape (aes-xts-plain64, 512-bit volume key,
// 4096-byte sectors, optional dm-integrity with hmac(sha256), pbkdf2
// keyslots, one "cloister-state" token), and Open refuses everything else.
//
// # What is trusted
//
// Nothing on the disk. Whoever holds the disk can write any header, for
// example one with cipher_null, a short key, a second segment or a keyslot
// with a known passphrase, and so downgrade or fake the disk's
// encryption. Open therefore validates the header before any other call
// uses it (see ValidateMetadata for the checks), and validates again after
// each change and before activation. Refusals are *HeaderError values that
// name the field. The header's UUID is the disk's identity towards the join
// service and an input of its key derivation, so Open refuses any UUID
// that is not canonical (keys.CheckDiskUUID): no uppercase, empty or
// path-like UUID leaves this package.
//
// # libcryptsetup's reasons
//
// libcryptsetup refuses some headers itself (a digest naming a missing
// segment, a keyslot area over the header, bad checksums) and returns only
// EINVAL; it says why only in debug-level log lines. Each handle installs
// a log callback whose usrptr is that handle's own C buffer (no global Go
// callback, no Go pointer kept by C): error-level lines are kept for every
// call, debug-level lines only while crypt_load reads a header, when no key
// material is in play. Progress lines are dropped and the rest lands in
// HeaderError.Reason (bounded, control characters replaced). Because
// libcryptsetup's debug switch is process-wide, the package sets it once
// per process together with a default callback that discards lines
// logged without a device, which libcryptsetup would otherwise print to
// stdout. The state token is untrusted too: it only says which key
// to ask for, and the key proves itself by opening a keyslot.
//
// # Passphrases
//
// Keyslot passphrases are exactly 32 uniformly random bytes. That is why
// pbkdf2 runs with the minimum of 1000 iterations and no benchmark: a slow
// PBKDF protects guessable passwords and adds nothing to a 256-bit random
// key, while it would slow every boot and every key check.
//
// # libcryptsetup binding
//
// The package calls libcryptsetup (Debian's libcryptsetup12, 2.6) through
// its own few lines of cgo (luks.go, about a dozen calls) instead of
// github.com/martinjungblut/go-cryptsetup. The pinned version of that
// binding lacks keyslot destroy, tokens and crypt_dump_json, which Rekey,
// the state token and validation need, and its C handle is unexported (and
// cgo types are per package anyway), so adding the missing calls beside it
// would have meant a second libcryptsetup handle on the same header, each
// with its own cached copy of the metadata. The fork
// github.com/edgelesssys/go-cryptsetup adds tokens and crypt_dump_json but
// still no keyslot destroy, and, like the original, takes passphrases as
// Go strings that it copies to the C heap without wiping. One handle per
// device, used for every call, with key material passed straight from Go
// memory, is the simplest robust option, and it adds no module to go.mod.
//
// The validated metadata is the JSON libcryptsetup itself loaded, taken
// with crypt_dump_json: libcryptsetup chooses between the two header copies
// and checks their checksums, so validating its view validates what it will
// act on. Open also checks the binary header (magic, version, size) before
// libcryptsetup parses anything.
//
// # Device-mapper
//
// Activate and Deactivate need device-mapper, and so does Format with
// dm-integrity (libcryptsetup writes the dm-integrity superblock through a
// temporary mapping). Host tests run everything else on file images with
// the real library; the QEMU end-to-end tests exercise those calls.
package cryptsetup
