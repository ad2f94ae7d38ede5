package cryptsetup

/*
#cgo LDFLAGS: -lcryptsetup
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <libcryptsetup.h>

// cloister_log collects what libcryptsetup reports for one handle (its
// usrptr), so Go errors can say why a call failed: error-level lines always,
// debug-level lines only while a header is read (reasons set), because
// libcryptsetup names why it refuses a LUKS2 header only at debug level
// ("Illegal area offset: 0."). No key material is in play while a header is
// read, and libcryptsetup logs no passphrase or key at any level; the
// debug lines of every other call are dropped all the same. Each line is
// stored as a level byte ('E' or 'D') and the message, ending in '\n'; lines
// that do not fit are dropped and counted.
struct cloister_log {
	int reasons;
	size_t len;
	unsigned dropped;
	char buf[2048];
};

static void cloister_log_cb(int level, const char *msg, void *usrptr) {
	struct cloister_log *l = usrptr;
	size_t n;
	char tag;
	if (l == NULL || msg == NULL)
		return;
	if (level == CRYPT_LOG_ERROR)
		tag = 'E';
	else if (level == CRYPT_LOG_DEBUG && l->reasons)
		tag = 'D';
	else
		return;
	n = strnlen(msg, sizeof(l->buf));
	while (n > 0 && (msg[n-1] == '\n' || msg[n-1] == '.'))
		n--;
	if (n == 0)
		return;
	if (l->len + n + 2 > sizeof(l->buf)) {
		l->dropped++;
		return;
	}
	l->buf[l->len++] = tag;
	memcpy(l->buf + l->len, msg, n);
	l->len += n;
	l->buf[l->len++] = '\n';
}

static void cloister_set_log(struct crypt_device *cd, struct cloister_log *l) {
	crypt_set_log_callback(cd, cloister_log_cb, l);
}

// cloister_discard receives what libcryptsetup logs without a device
// context (crypt_init logs before the handle exists), which it would
// otherwise print to the process's stdout and stderr.
static void cloister_discard(int level, const char *msg, void *usrptr) {
	(void)level; (void)msg; (void)usrptr;
}

static void cloister_lib_setup(void) {
	crypt_set_log_callback(NULL, cloister_discard, NULL);
	// Debug level is process-wide in libcryptsetup; it only makes debug
	// lines reach the per-handle callbacks above, which drop them unless a
	// header is being read. CRYPT_DEBUG_JSON (whole metadata dumps) stays
	// off.
	crypt_set_debug_level(CRYPT_DEBUG_ALL);
}

static pthread_once_t cloister_once = PTHREAD_ONCE_INIT;

// cloister_setup configures the library once per process, before the
// first handle: the same constant settings every time.
static void cloister_setup(void) {
	pthread_once(&cloister_once, cloister_lib_setup);
}

static int cloister_format(struct crypt_device *cd, const char *integrity,
		size_t volume_key_size, uint32_t iterations) {
	struct crypt_pbkdf_type pbkdf = {
		.type = CRYPT_KDF_PBKDF2,
		.hash = "sha256",
		.time_ms = 1,
		.iterations = iterations,
		.flags = CRYPT_PBKDF_NO_BENCHMARK,
	};
	struct crypt_params_luks2 params = {
		.pbkdf = &pbkdf,
		.integrity = integrity,
		.sector_size = 4096,
	};
	int r = crypt_set_pbkdf_type(cd, &pbkdf);
	if (r < 0)
		return r;
	return crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", NULL, NULL,
		volume_key_size, &params);
}

static int cloister_set_pbkdf(struct crypt_device *cd, uint32_t iterations) {
	struct crypt_pbkdf_type pbkdf = {
		.type = CRYPT_KDF_PBKDF2,
		.hash = "sha256",
		.time_ms = 1,
		.iterations = iterations,
		.flags = CRYPT_PBKDF_NO_BENCHMARK,
	};
	return crypt_set_pbkdf_type(cd, &pbkdf);
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"syscall"
	"unsafe"
)

// maxJSONCopy bounds what is copied out of libcryptsetup. LUKS2 allows a
// JSON area of up to 4 MiB; ours is 12 KiB, and ValidateMetadata refuses
// anything larger than maxMetadataSize anyway.
const maxJSONCopy = 4 << 20

// handle is one libcryptsetup context for one device. It is not safe for
// concurrent use; Device serializes calls.
type handle struct {
	cd  *C.struct_crypt_device
	log *C.struct_cloister_log
}

func newHandle(path string) (*handle, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	C.cloister_setup()
	var cd *C.struct_crypt_device
	if r := C.crypt_init(&cd, cpath); r < 0 {
		return nil, errnoError(r)
	}
	l := (*C.struct_cloister_log)(C.calloc(1, C.sizeof_struct_cloister_log))
	if l == nil {
		C.crypt_free(cd)
		return nil, errors.New("allocating log buffer")
	}
	C.cloister_set_log(cd, l)
	return &handle{cd: cd, log: l}, nil
}

func (h *handle) free() {
	if h.cd != nil {
		C.crypt_free(h.cd)
		h.cd = nil
	}
	if h.log != nil {
		C.free(unsafe.Pointer(h.log))
		h.log = nil
	}
}

// clearLog forgets what libcryptsetup reported before a new call, so an
// error never carries a message from an earlier call.
func (h *handle) clearLog() {
	h.log.len = 0
	h.log.dropped = 0
	h.log.reasons = 0
}

// err turns a negative libcryptsetup return value into an error that
// unwraps to the errno and carries libcryptsetup's reasons.
func (h *handle) err(r C.int) error {
	e := errnoError(r)
	if why := h.reasons(); why != "" {
		return &libError{errno: e, reason: why}
	}
	return e
}

// reasons returns what libcryptsetup reported since clearLog, filtered by
// libReasons, and forgets it.
func (h *handle) reasons() string {
	if h.log == nil || h.log.len == 0 {
		return ""
	}
	raw := C.GoBytes(unsafe.Pointer(&h.log.buf[0]), C.int(h.log.len))
	dropped := uint(h.log.dropped)
	h.clearLog()
	return libReasons(raw, dropped)
}

func errnoError(r C.int) error {
	if r >= 0 {
		return nil
	}
	return syscall.Errno(-r)
}

func (h *handle) format(integrity string, volumeKeySize int, iterations uint32) error {
	h.clearLog()
	var cint *C.char
	if integrity != "" {
		cint = C.CString(integrity)
		defer C.free(unsafe.Pointer(cint))
	}
	if r := C.cloister_format(h.cd, cint, C.size_t(volumeKeySize), C.uint32_t(iterations)); r < 0 {
		return h.err(r)
	}
	return nil
}

// setPBKDF makes the next keyslot use pbkdf2-sha256 with fixed iterations.
// A loaded handle defaults to a benchmarked argon2id otherwise.
func (h *handle) setPBKDF(iterations uint32) error {
	h.clearLog()
	if r := C.cloister_set_pbkdf(h.cd, C.uint32_t(iterations)); r < 0 {
		return h.err(r)
	}
	return nil
}

func (h *handle) load() error {
	h.clearLog()
	h.log.reasons = 1
	// A nil type loads LUKS1 or LUKS2, so that a LUKS1 header is
	// refused by name rather than as unreadable.
	r := C.crypt_load(h.cd, nil, nil)
	h.log.reasons = 0
	if r < 0 {
		return h.err(r)
	}
	return nil
}

func (h *handle) typ() string {
	t := C.crypt_get_type(h.cd)
	if t == nil {
		return ""
	}
	return C.GoString(t)
}

func (h *handle) uuid() string {
	u := C.crypt_get_uuid(h.cd)
	if u == nil {
		return ""
	}
	return C.GoString(u)
}

func (h *handle) label() string {
	l := C.crypt_get_label(h.cd)
	if l == nil {
		return ""
	}
	return C.GoString(l)
}

func (h *handle) subsystem() string {
	s := C.crypt_get_subsystem(h.cd)
	if s == nil {
		return ""
	}
	return C.GoString(s)
}

// dumpJSON returns a copy of the LUKS2 JSON metadata libcryptsetup loaded,
// which is what every later call acts on.
func (h *handle) dumpJSON() ([]byte, error) {
	h.clearLog()
	var js *C.char
	if r := C.crypt_dump_json(h.cd, &js, 0); r < 0 {
		return nil, h.err(r)
	}
	return boundedCopy(js)
}

func boundedCopy(s *C.char) ([]byte, error) {
	if s == nil {
		return nil, errors.New("libcryptsetup returned no JSON")
	}
	n := C.strnlen(s, maxJSONCopy+1)
	if n > maxJSONCopy {
		return nil, fmt.Errorf("JSON longer than %d bytes", maxJSONCopy)
	}
	return C.GoBytes(unsafe.Pointer(s), C.int(n)), nil
}

// bytesPtr passes Go memory without copying it: key material is never
// duplicated on the C heap, where it could not be wiped.
func bytesPtr(b []byte) *C.char {
	if len(b) == 0 {
		return nil
	}
	return (*C.char)(unsafe.Pointer(&b[0]))
}

// addKeyslotByVolumeKey adds a keyslot for pass using the volume key that
// format left in the handle.
func (h *handle) addKeyslotByVolumeKey(pass []byte) (int, error) {
	h.clearLog()
	r := C.crypt_keyslot_add_by_volume_key(h.cd, C.CRYPT_ANY_SLOT, nil, 0, bytesPtr(pass), C.size_t(len(pass)))
	runtime.KeepAlive(pass)
	if r < 0 {
		return 0, h.err(r)
	}
	return int(r), nil
}

func (h *handle) addKeyslotByPassphrase(oldPass, newPass []byte) (int, error) {
	h.clearLog()
	r := C.crypt_keyslot_add_by_passphrase(h.cd, C.CRYPT_ANY_SLOT,
		bytesPtr(oldPass), C.size_t(len(oldPass)), bytesPtr(newPass), C.size_t(len(newPass)))
	runtime.KeepAlive(oldPass)
	runtime.KeepAlive(newPass)
	if r < 0 {
		return 0, h.err(r)
	}
	return int(r), nil
}

// activate maps the device as name, or only checks the passphrase when
// name is empty (no device-mapper needed). It returns the keyslot used.
func (h *handle) activate(name string, pass []byte) (int, error) {
	h.clearLog()
	var cname *C.char
	if name != "" {
		cname = C.CString(name)
		defer C.free(unsafe.Pointer(cname))
	}
	r := C.crypt_activate_by_passphrase(h.cd, cname, C.CRYPT_ANY_SLOT, bytesPtr(pass), C.size_t(len(pass)), 0)
	runtime.KeepAlive(pass)
	if r < 0 {
		return 0, h.err(r)
	}
	return int(r), nil
}

func (h *handle) deactivate(name string) error {
	h.clearLog()
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	if r := C.crypt_deactivate(h.cd, cname); r < 0 {
		return h.err(r)
	}
	return nil
}

func (h *handle) destroyKeyslot(slot int) error {
	h.clearLog()
	if r := C.crypt_keyslot_destroy(h.cd, C.int(slot)); r < 0 {
		return h.err(r)
	}
	return nil
}

func (h *handle) tokenJSON(id int) ([]byte, error) {
	h.clearLog()
	var js *C.char
	if r := C.crypt_token_json_get(h.cd, C.int(id), &js); r < 0 {
		return nil, h.err(r)
	}
	return boundedCopy(js)
}

// setTokenJSON writes token id in one header update: libcryptsetup
// replaces an existing token with the same id.
func (h *handle) setTokenJSON(id int, js []byte) error {
	h.clearLog()
	cjs := C.CString(string(js))
	defer C.free(unsafe.Pointer(cjs))
	r := C.crypt_token_json_set(h.cd, C.int(id), cjs)
	if r < 0 {
		return h.err(r)
	}
	if int(r) != id {
		return fmt.Errorf("token written to id %d, want %d", int(r), id)
	}
	return nil
}
