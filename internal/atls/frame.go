package atls

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	atlsv1 "github.com/cloister-dev/cloister/proto/atls/v1"
)

// MaxFrameSize bounds one frame of the attestation exchange. TPM evidence
// with a full event log is the largest (tens to a few hundred KiB).
const MaxFrameSize = 4 << 20

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
// MaxFrameSize before anything else, and the buffer grows only with the
// bytes actually received, so a peer that announces a large frame and sends
// little costs little memory.
func readFrame(r io.Reader) (*atlsv1.Frame, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, fmt.Errorf("reading frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > MaxFrameSize {
		return nil, fmt.Errorf("%w: announces %d bytes, limit %d", errMalformedFrame, n, MaxFrameSize)
	}
	var body bytes.Buffer
	got, err := body.ReadFrom(io.LimitReader(r, int64(n)))
	if err != nil {
		return nil, fmt.Errorf("reading frame body: %w", err)
	}
	if got != int64(n) {
		return nil, fmt.Errorf("reading frame body: got %d of %d bytes: %w", got, n, io.ErrUnexpectedEOF)
	}
	f := &atlsv1.Frame{}
	if err := proto.Unmarshal(body.Bytes(), f); err != nil {
		return nil, fmt.Errorf("%w: %v", errMalformedFrame, err)
	}
	if f.GetKind() == nil {
		return nil, fmt.Errorf("%w: no message kind", errMalformedFrame)
	}
	return f, nil
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
