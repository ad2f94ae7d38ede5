package atls

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	atlsv1 "github.com/cloister-dev/cloister/proto/atls/v1"
)

// MaxFrameSize bounds one frame of the attestation exchange. TPM evidence
// with its event log is the largest: real event logs are 3-50 KiB (the
// largest in go-tpm-tools' corpus of distributions is 50 KiB), quotes and
// certificates add a few KiB; SEV-SNP evidence with its certificate chain
// is about 6 KiB, a TDX quote with its PCK chain about 5 KiB. 1 MiB leaves
// a margin of 20 over the largest, and bounds what one unauthenticated
// connection can make a server hold.
const MaxFrameSize = 1 << 20

// frameChunk is the first read buffer of a frame body; it doubles only once
// filled by bytes that arrived, so memory follows what the peer sent.
const frameChunk = 16 << 10

// frameHeaderSize is the length prefix: 4 bytes, big endian.
const frameHeaderSize = 4

// errMalformedFrame is wrapped by every error about a frame the peer sent
// that cannot be decoded or comes out of turn.
var errMalformedFrame = errors.New("malformed frame")

// writeFrame sends f with its length prefix in one write.
func writeFrame(w io.Writer, f *atlsv1.Frame) error {
	body, err := proto.Marshal(f)
	if err != nil {
		return fmt.Errorf("encoding frame: %w", err)
	}
	if len(body) > MaxFrameSize {
		return fmt.Errorf("frame of %d bytes exceeds limit %d", len(body), MaxFrameSize)
	}
	buf := make([]byte, frameHeaderSize, frameHeaderSize+len(body))
	binary.BigEndian.PutUint32(buf, uint32(len(body)))
	buf = append(buf, body...)
	if _, err := w.Write(buf); err != nil {
		return fmt.Errorf("writing frame: %w", err)
	}
	return nil
}

// readFrame reads one frame. The announced length is checked against
// MaxFrameSize before anything else. The body buffer starts small and
// doubles only once filled by bytes that actually arrived, so a peer that
// announces a large frame and trickles little costs little memory; each
// growth is charged to mem first (nil: nothing charged), and a growth the
// budget cannot cover fails with ErrBusy.
func readFrame(r io.Reader, mem *charge) (*atlsv1.Frame, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading frame header: %w", err)
	}
	n := int(binary.BigEndian.Uint32(hdr[:]))
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: announces %d bytes, limit %d", errMalformedFrame, n, MaxFrameSize)
	}
	body, err := readBody(r, n, mem)
	if err != nil {
		return nil, err
	}
	f := &atlsv1.Frame{}
	if err := proto.Unmarshal(body, f); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformedFrame, err)
	}
	if f.GetKind() == nil {
		return nil, fmt.Errorf("%w: no message kind", errMalformedFrame)
	}
	return f, nil
}

// readBody reads exactly n bytes into a buffer that grows with them.
func readBody(r io.Reader, n int, mem *charge) ([]byte, error) {
	size := min(n, frameChunk)
	if err := mem.take(int64(size)); err != nil {
		return nil, err
	}
	buf := make([]byte, 0, size)
	for len(buf) < n {
		if len(buf) == cap(buf) {
			grown := min(n, 2*cap(buf))
			if err := mem.take(int64(grown)); err != nil {
				return nil, err
			}
			buf = append(make([]byte, 0, grown), buf...)
		}
		got, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+got]
		if err != nil && len(buf) < n {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, fmt.Errorf("reading frame body: got %d of %d bytes: %w", len(buf), n, err)
		}
	}
	return buf, nil
}

// frameKind names a frame's kind for errors.
func frameKind(f *atlsv1.Frame) string {
	switch f.GetKind().(type) {
	case *atlsv1.Frame_Evidence:
		return "evidence"
	case *atlsv1.Frame_NoEvidence:
		return "no_evidence"
	case *atlsv1.Frame_Challenge:
		return "challenge"
	case *atlsv1.Frame_ChallengeResponse:
		return "challenge_response"
	case *atlsv1.Frame_Verdict:
		return "verdict"
	default:
		return "unknown"
	}
}

// unexpectedFrame is the error for a frame that comes out of turn.
func unexpectedFrame(want string, got *atlsv1.Frame) error {
	return fmt.Errorf("%w: want %s, got %s", errMalformedFrame, want, frameKind(got))
}
