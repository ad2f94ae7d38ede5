package cryptsetup

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
)

// The header Format writes. ValidateMetadata accepts exactly this and the
// states Rekey passes through; everything else is refused.
const (
	cipher           = "aes"
	cipherMode       = "xts-plain64"
	encryption       = cipher + "-" + cipherMode
	sectorSize       = 4096
	volumeKeySize    = 64 // bytes: AES-256 in XTS mode takes two 256-bit keys
	integrityType    = "hmac(sha256)"
	integrityKeySize = 32 // bytes: the HMAC-SHA256 key dm-integrity gets after the XTS key
	// pbkdf2Iterations is the minimum libcryptsetup accepts. Keyslot
	// passphrases are 32 uniformly random bytes (256 bits of entropy), not
	// something a person chose: there is nothing to stretch, and guessing
	// the key costs 2^255 tries however cheap one try is. A slow PBKDF
	// would only slow down every boot and every key check.
	pbkdf2Iterations = 1000
	pbkdfHash        = "sha256"
	afStripes        = 4000
	maxKeyslots      = 2  // one normally, two while Rekey moves to the new key
	maxKeyslotID     = 31 // LUKS2 has 32 keyslots
	saltSize         = 32
	digestSize       = 32 // pbkdf2-sha256 digest of the volume key

	// Layout libcryptsetup picks for a 4096-byte-sector LUKS2 device with
	// default metadata size: two 16 KiB header copies, keyslot areas, then
	// data at 16 MiB.
	hdrSize       = 16384
	jsonSize      = hdrSize - 4096
	keyslotsSize  = segmentOffset - 2*hdrSize
	segmentOffset = 16 << 20

	// maxMetadataSize bounds the JSON ValidateMetadata parses. The on-disk
	// JSON area is 12 KiB; libcryptsetup pretty-prints it when dumping.
	maxMetadataSize = 64 << 10
	// maxDepth bounds nesting; LUKS2 metadata needs 4 levels.
	maxDepth = 6
)

// FormatOptions selects the optional parts of the header. The zero value
// is the plain LUKS2 header without dm-integrity. Open and ValidateMetadata
// take the same options and accept only what Format writes with them.
type FormatOptions struct {
	// Integrity adds dm-integrity with hmac(sha256) below dm-crypt, so a
	// modified sector fails to read instead of decrypting to garbage. It
	// needs device-mapper already at Format time (libcryptsetup writes the
	// dm-integrity superblock through a temporary mapping).
	Integrity bool
}

func (o FormatOptions) volumeKeySize() int {
	if o.Integrity {
		return volumeKeySize + integrityKeySize
	}
	return volumeKeySize
}

// checkBinaryHeader checks the fixed 4096-byte binary header in front of
// the primary JSON area before libcryptsetup parses anything, so that a
// LUKS1 or foreign header is refused by name.
func checkBinaryHeader(r io.ReadSeeker) error {
	size, err := r.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("reading device size: %w", err)
	}
	if size <= segmentOffset {
		return headerErr("header", fmt.Sprintf("device larger than the %d-byte header area", segmentOffset), fmt.Sprintf("%d bytes", size))
	}
	var b [4096]byte
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("reading LUKS header: %w", err)
	}
	n, err := io.ReadFull(r, b[:])
	if n < len(b) {
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("reading LUKS header: %w", err)
		}
		return headerErr("header", "4096-byte LUKS2 binary header", strconv.Itoa(n)+" bytes")
	}
	if !bytes.Equal(b[:6], []byte("LUKS\xba\xbe")) {
		return headerErr("header.magic", "4c554b53babe", fmt.Sprintf("%x", b[:6]))
	}
	if v := binary.BigEndian.Uint16(b[6:8]); v != 2 {
		return headerErr("header.version", "2", strconv.Itoa(int(v)))
	}
	if s := binary.BigEndian.Uint64(b[8:16]); s != hdrSize {
		return headerErr("header.hdr_size", strconv.Itoa(hdrSize), strconv.FormatUint(s, 10))
	}
	return nil
}

// ValidateMetadata checks untrusted LUKS2 JSON metadata against the header
// Format writes with opts, and returns the first difference as a
// *HeaderError. It is pure: it reads only metadata. The checks, in order:
//
//  1. size at most 64 KiB, valid JSON, no duplicate keys, nesting depth;
//     top level exactly keyslots, tokens, segments, digests, config;
//  2. config: json_size and keyslots_size as formatted, no flags, no
//     requirements;
//  3. segments: exactly segment 0, type crypt at offset 16 MiB, dynamic
//     size, iv_tweak 0, aes-xts-plain64, 4096-byte sectors, no flags, and
//     integrity hmac(sha256) without journal encryption or integrity
//     exactly when opts.Integrity is set;
//  4. keyslots: one or two, ids 0-31, each luks2 with the volume key size
//     (64 bytes, 96 with integrity), normal priority, pbkdf2-sha256 with
//     1000 iterations, af luks1 with 4000 sha256 stripes, and a raw
//     aes-xts-plain64 area of the matching size inside the keyslots area;
//  5. digests: exactly digest 0, pbkdf2-sha256 with 1000 iterations,
//     covering exactly the keyslots and segment 0;
//  6. tokens: exactly token 0, the "cloister-state" token (see State).
//
// Unknown fields at any level are refused.
func ValidateMetadata(metadata []byte, opts FormatOptions) error {
	if len(metadata) > maxMetadataSize {
		return headerErr("metadata", fmt.Sprintf("at most %d bytes", maxMetadataSize), fmt.Sprintf("%d bytes", len(metadata)))
	}
	if err := checkJSONShape(metadata); err != nil {
		return err
	}
	top, err := parseObject("", metadata)
	if err != nil {
		return err
	}
	var (
		keyslots, tokens, segments, digests, config *object
	)
	for _, f := range []struct {
		key string
		dst **object
	}{{"config", &config}, {"segments", &segments}, {"keyslots", &keyslots}, {"digests", &digests}, {"tokens", &tokens}} {
		if *f.dst, err = top.obj(f.key); err != nil {
			return err
		}
	}
	if err := top.done(); err != nil {
		return err
	}
	if err := checkConfig(config); err != nil {
		return err
	}
	if err := checkSegments(segments, opts); err != nil {
		return err
	}
	slots, err := checkKeyslots(keyslots, opts)
	if err != nil {
		return err
	}
	if err := checkDigests(digests, slots); err != nil {
		return err
	}
	return checkTokens(tokens)
}

func checkConfig(c *object) error {
	if err := c.wantDecimal("json_size", jsonSize); err != nil {
		return err
	}
	if err := c.wantDecimal("keyslots_size", keyslotsSize); err != nil {
		return err
	}
	if err := c.absent("flags"); err != nil {
		return err
	}
	if err := c.absent("requirements"); err != nil {
		return err
	}
	return c.done()
}

func checkSegments(segs *object, opts FormatOptions) error {
	if err := segs.onlyID("segment", "0"); err != nil {
		return err
	}
	s, err := segs.obj("0")
	if err != nil {
		return err
	}
	if err := s.wantString("type", "crypt"); err != nil {
		return err
	}
	if err := s.wantDecimal("offset", segmentOffset); err != nil {
		return err
	}
	if err := s.wantString("size", "dynamic"); err != nil {
		return err
	}
	if err := s.wantString("iv_tweak", "0"); err != nil {
		return err
	}
	if err := s.wantString("encryption", encryption); err != nil {
		return err
	}
	if err := s.wantNumber("sector_size", sectorSize); err != nil {
		return err
	}
	if err := s.absent("flags"); err != nil {
		return err
	}
	if !opts.Integrity {
		if err := s.absent("integrity"); err != nil {
			return err
		}
	} else {
		in, err := s.obj("integrity")
		if err != nil {
			return err
		}
		if err := in.wantString("type", integrityType); err != nil {
			return err
		}
		if err := in.wantString("journal_encryption", "none"); err != nil {
			return err
		}
		if err := in.wantString("journal_integrity", "none"); err != nil {
			return err
		}
		if err := in.done(); err != nil {
			return err
		}
	}
	if err := s.done(); err != nil {
		return err
	}
	return segs.done()
}

// checkKeyslots returns the keyslot ids in numeric order.
func checkKeyslots(ks *object, opts FormatOptions) ([]string, error) {
	ids := ks.keys()
	if len(ids) == 0 || len(ids) > maxKeyslots {
		return nil, headerErr("keyslots", fmt.Sprintf("1 to %d keyslots", maxKeyslots), strconv.Itoa(len(ids)))
	}
	for _, id := range ids {
		if _, ok := canonicalID(id, maxKeyslotID); !ok {
			return nil, headerErr("keyslots", fmt.Sprintf("keyslot ids 0-%d", maxKeyslotID), id)
		}
	}
	slices.SortFunc(ids, compareIDs)
	keySize := uint64(opts.volumeKeySize())
	for _, id := range ids {
		k, err := ks.obj(id)
		if err != nil {
			return nil, err
		}
		if err := k.wantString("type", "luks2"); err != nil {
			return nil, err
		}
		if err := k.wantNumber("key_size", keySize); err != nil {
			return nil, err
		}
		if k.has("priority") {
			// 1 is "normal"; 0 (ignore) or 2 (prefer) would change which
			// keyslot libcryptsetup tries, so only normal is ours.
			if err := k.wantNumber("priority", 1); err != nil {
				return nil, err
			}
		}
		kdf, err := k.obj("kdf")
		if err != nil {
			return nil, err
		}
		if err := checkPBKDF2(kdf); err != nil {
			return nil, err
		}
		if err := kdf.done(); err != nil {
			return nil, err
		}
		af, err := k.obj("af")
		if err != nil {
			return nil, err
		}
		if err := af.wantString("type", "luks1"); err != nil {
			return nil, err
		}
		if err := af.wantNumber("stripes", afStripes); err != nil {
			return nil, err
		}
		if err := af.wantString("hash", pbkdfHash); err != nil {
			return nil, err
		}
		if err := af.done(); err != nil {
			return nil, err
		}
		area, err := k.obj("area")
		if err != nil {
			return nil, err
		}
		if err := area.wantString("type", "raw"); err != nil {
			return nil, err
		}
		if err := area.wantString("encryption", encryption); err != nil {
			return nil, err
		}
		if err := area.wantNumber("key_size", volumeKeySize); err != nil {
			return nil, err
		}
		// The split key (key size times stripes) rounded up to 4 KiB.
		areaSize := (keySize*afStripes + 4095) / 4096 * 4096
		if err := area.wantDecimal("size", areaSize); err != nil {
			return nil, err
		}
		off, err := area.decimal("offset")
		if err != nil {
			return nil, err
		}
		if off < 2*hdrSize || off%4096 != 0 || off > segmentOffset-areaSize {
			return nil, headerErr(area.path+".offset", fmt.Sprintf("4 KiB-aligned offset in [%d, %d]", 2*hdrSize, segmentOffset-areaSize), strconv.FormatUint(off, 10))
		}
		if err := area.done(); err != nil {
			return nil, err
		}
		if err := k.done(); err != nil {
			return nil, err
		}
	}
	return ids, ks.done()
}

func checkPBKDF2(o *object) error {
	if err := o.wantString("type", "pbkdf2"); err != nil {
		return err
	}
	if err := o.wantString("hash", pbkdfHash); err != nil {
		return err
	}
	if err := o.wantNumber("iterations", pbkdf2Iterations); err != nil {
		return err
	}
	return o.wantBase64("salt", saltSize)
}

func checkDigests(ds *object, slots []string) error {
	if err := ds.onlyID("digest", "0"); err != nil {
		return err
	}
	d, err := ds.obj("0")
	if err != nil {
		return err
	}
	if err := checkPBKDF2(d); err != nil {
		return err
	}
	if err := d.wantBase64("digest", digestSize); err != nil {
		return err
	}
	if err := d.wantIDSet("keyslots", slots); err != nil {
		return err
	}
	if err := d.wantStrings("segments", []string{"0"}); err != nil {
		return err
	}
	if err := d.done(); err != nil {
		return err
	}
	return ds.done()
}

func checkTokens(ts *object) error {
	// A foreign token is named by its type, the clearest thing to report.
	for _, id := range ts.keys() {
		t, err := ts.obj(id)
		if err != nil {
			return err
		}
		if err := t.wantString("type", tokenType); err != nil {
			return err
		}
	}
	if err := ts.onlyID("token", strconv.Itoa(tokenID)); err != nil {
		return err
	}
	if _, err := parseState(ts.path+"."+strconv.Itoa(tokenID), ts.m[strconv.Itoa(tokenID)]); err != nil {
		return err
	}
	ts.used[strconv.Itoa(tokenID)] = true
	return ts.done()
}

// canonicalID parses a decimal id without sign or leading zeros.
func canonicalID(s string, maxID uint64) (uint64, bool) {
	v, ok := canonicalDecimal(s)
	return v, ok && v <= maxID
}

func canonicalDecimal(s string) (uint64, bool) {
	if s == "" || len(s) > 20 || (len(s) > 1 && s[0] == '0') {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	return v, err == nil
}

// checkJSONShape walks the untrusted JSON once before it is decoded: one
// value, nesting at most maxDepth, no duplicate keys (encoding/json would
// silently keep the last one, and json-c in libcryptsetup might keep
// another).
func checkJSONShape(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := walkJSON(dec, "", 0); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return headerErr("metadata", "one JSON value", "trailing data")
	}
	return nil
}

func walkJSON(dec *json.Decoder, path string, depth int) error {
	tok, err := dec.Token()
	if err != nil {
		return jsonSyntaxErr(path, err)
	}
	d, ok := tok.(json.Delim)
	if !ok {
		return nil
	}
	if depth >= maxDepth {
		return headerErr(fieldName(path), fmt.Sprintf("nesting depth at most %d", maxDepth), "deeper")
	}
	switch d {
	case '{':
		keys := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return jsonSyntaxErr(path, err)
			}
			k, ok := kt.(string)
			if !ok {
				return headerErr(fieldName(path), "string key", fmt.Sprint(kt))
			}
			if keys[k] {
				return headerErr(pathJoin(path, k), "one value", "duplicate key")
			}
			keys[k] = true
			if err := walkJSON(dec, pathJoin(path, k), depth+1); err != nil {
				return err
			}
		}
	case '[':
		for i := 0; dec.More(); i++ {
			if err := walkJSON(dec, pathJoin(path, strconv.Itoa(i)), depth+1); err != nil {
				return err
			}
		}
	default:
		return headerErr(fieldName(path), "JSON value", string(d))
	}
	if _, err := dec.Token(); err != nil { // the closing delimiter
		return jsonSyntaxErr(path, err)
	}
	return nil
}

// jsonSyntaxErr reports broken JSON on the whole metadata, with where it
// broke in Got.
func jsonSyntaxErr(path string, err error) error {
	got := err.Error()
	if errors.Is(err, io.EOF) {
		got = "truncated JSON"
	}
	if path != "" {
		got += " in " + path
	}
	return headerErr("metadata", "valid JSON", got)
}

func fieldName(path string) string {
	if path == "" {
		return "metadata"
	}
	return path
}

// pathJoin appends an untrusted key to a field path, quoted unless it is
// short, plain and free of dots, so a field name is never empty or
// ambiguous.
func pathJoin(path, key string) string {
	if !plainKey(key) {
		if len(key) > maxKeyName {
			key = key[:maxKeyName]
		}
		key = strconv.Quote(key)
	}
	if path == "" {
		return key
	}
	return path + "." + key
}

const maxKeyName = 32

func plainKey(k string) bool {
	if k == "" || len(k) > maxKeyName {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if c <= ' ' || c >= 0x7f || c == '.' || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}
