package atls

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/codes"

	"github.com/cloister-dev/cloister/internal/attestation"
	atlsv1 "github.com/cloister-dev/cloister/proto/atls/v1"
	attestationv1 "github.com/cloister-dev/cloister/proto/attestation/v1"
)

// Roles of the attesting side, bound into its evidence.
const (
	roleClient = "client"
	roleServer = "server"
)

// The TLS exporter every attestation binds (RFC 8446 §7.5).
const (
	exporterLabel = "EXPORTER-cloister-atls-v1"
	exporterSize  = 32
)

// bindingDomain separates this binding from any other use of the evidence.
const bindingDomain = "cloister-atls-v1"

// bindingData is the userData of the evidence an attester in role sends over
// the TLS session whose exporter is given:
// SHA-256("cloister-atls-v1" ‖ role ‖ exporter). Both roles have 6 bytes and
// the exporter 32, so the concatenation is unambiguous. The role keeps a
// client's evidence from being reflected back as the server's.
func bindingData(role, exporter []byte) []byte {
	h := sha256.New()
	h.Write([]byte(bindingDomain))
	h.Write(role)
	h.Write(exporter)
	return h.Sum(nil)
}

// exchange runs the attestation frames over one TLS session. Each direction
// is one call of attest on the attester and verify on the verifier.
type exchange struct {
	conn             io.ReadWriter
	exporter         []byte
	issuer           attestation.Issuer
	verifier         Verifier
	acceptUnattested bool
	// mem charges the frames read on a server to the budget for
	// unauthenticated peers; nil on a client.
	mem *charge
	// beforeIssue, when set, runs on a server before it accepts the peer
	// and so before it issues its own evidence for it: the quote limit for
	// unattested peers. Its ErrBusy reaches the peer as a busy refusal.
	beforeIssue func() error
}

// attest sends this side's evidence as role (or no_evidence), answers at most
// one challenge and returns the peer's verdict: nil when accepted, a
// *RefusedError when refused.
func (x *exchange) attest(ctx context.Context, role string) error {
	peerRole := otherRole(role)
	out := &atlsv1.Frame{Kind: &atlsv1.Frame_NoEvidence{NoEvidence: &atlsv1.NoEvidence{}}}
	if x.issuer != nil {
		ev, err := x.issuer.Issue(ctx, bindingData([]byte(role), x.exporter))
		if err != nil {
			return fmt.Errorf("atls: issuing %s evidence: %w", role, err)
		}
		out = &atlsv1.Frame{Kind: &atlsv1.Frame_Evidence{Evidence: ev}}
	}
	if err := writeFrame(x.conn, out); err != nil {
		return fmt.Errorf("atls: sending %s evidence: %w", role, err)
	}
	in, err := readFrame(x.conn, x.mem)
	if err != nil {
		return fmt.Errorf("atls: reading %s's verdict: %w", peerRole, err)
	}
	if ch := in.GetChallenge(); ch != nil {
		if err := x.answer(ctx, role, ch); err != nil {
			return err
		}
		if in, err = readFrame(x.conn, x.mem); err != nil {
			return fmt.Errorf("atls: reading %s's verdict: %w", peerRole, err)
		}
	}
	verdict := in.GetVerdict()
	if verdict == nil {
		return fmt.Errorf("atls: reading %s's verdict: %w", peerRole, unexpectedFrame("verdict", in))
	}
	if !verdict.GetAccepted() {
		return &RefusedError{Peer: peerRole, UntrustedReason: verdict.GetReason(), Busy: verdict.GetBusy()}
	}
	return nil
}

// answer responds to the verifier's challenge with the issuer's Responder.
func (x *exchange) answer(ctx context.Context, role string, ch *attestationv1.ActivationChallenge) error {
	if x.issuer == nil {
		return fmt.Errorf("atls: %w: challenge for a %s that sent no evidence", errMalformedFrame, role)
	}
	r, ok := x.issuer.(attestation.Responder)
	if !ok {
		return fmt.Errorf("atls: %s's issuer (%s) cannot answer the peer's challenge: it is no attestation.Responder", role, x.issuer.Variant())
	}
	secret, err := r.Respond(ctx, ch)
	if err != nil {
		return fmt.Errorf("atls: answering challenge: %w", err)
	}
	resp := &atlsv1.Frame{Kind: &atlsv1.Frame_ChallengeResponse{ChallengeResponse: &atlsv1.ChallengeResponse{ActivatedSecret: secret}}}
	if err := writeFrame(x.conn, resp); err != nil {
		return fmt.Errorf("atls: sending challenge response: %w", err)
	}
	return nil
}

// verify reads the evidence of the peer in peerRole, checks it and sends the
// verdict. It returns the peer's claims, nil when the peer was accepted
// without verification (acceptUnattested). A refusal is sent to the peer
// with the error text as reason before the error is returned.
func (x *exchange) verify(ctx context.Context, peerRole string) (*attestation.Claims, error) {
	in, err := readFrame(x.conn, x.mem)
	if err != nil {
		if errors.Is(err, errMalformedFrame) || errors.Is(err, ErrBusy) {
			return nil, x.refuse(fmt.Errorf("atls: reading %s evidence: %w", peerRole, err))
		}
		return nil, fmt.Errorf("atls: reading %s evidence: %w", peerRole, err)
	}
	var claims *attestation.Claims
	switch {
	case x.acceptUnattested && (in.GetEvidence() != nil || in.GetNoEvidence() != nil):
		// Not verified on purpose: Config.AcceptUnattestedPeer.
	case in.GetNoEvidence() != nil:
		return nil, x.refuse(fmt.Errorf("atls: verifying %s: %w (this side requires attestation)", peerRole, ErrUnattestedPeer))
	case in.GetEvidence() != nil:
		claims, err = x.check(ctx, in.GetEvidence(), bindingData([]byte(peerRole), x.exporter))
		if err != nil {
			err = fmt.Errorf("atls: verifying %s: %w", peerRole, err)
			if c := Code(err); c == codes.Unavailable || c == codes.Canceled {
				return nil, err // the connection is gone: no verdict to send
			}
			return nil, x.refuse(err)
		}
		if claims == nil {
			return nil, x.refuse(fmt.Errorf("atls: verifying %s: validator of %q returned no claims and no error", peerRole, in.GetEvidence().GetVariant()))
		}
	default:
		return nil, x.refuse(fmt.Errorf("atls: reading %s evidence: %w", peerRole, unexpectedFrame("evidence or no_evidence", in)))
	}
	if x.beforeIssue != nil {
		// Checked before the verdict, so that a peer over the limit is
		// told the server is busy instead of finding the connection
		// closed where it waits for the server's evidence.
		if err := x.beforeIssue(); err != nil {
			return nil, x.refuse(err)
		}
	}
	accept := &atlsv1.Frame{Kind: &atlsv1.Frame_Verdict{Verdict: &atlsv1.Verdict{Accepted: true}}}
	if err := writeFrame(x.conn, accept); err != nil {
		return nil, fmt.Errorf("atls: sending verdict to %s: %w", peerRole, err)
	}
	return claims, nil
}

// check runs the optional challenge round and validates ev against userData.
func (x *exchange) check(ctx context.Context, ev *attestationv1.Evidence, userData []byte) (*attestation.Claims, error) {
	ch, err := x.verifier.Challenge(ctx, ev, userData)
	if err != nil {
		return nil, err
	}
	if ch != nil {
		if err := writeFrame(x.conn, &atlsv1.Frame{Kind: &atlsv1.Frame_Challenge{Challenge: ch}}); err != nil {
			return nil, fmt.Errorf("sending challenge: %w", err)
		}
		in, err := readFrame(x.conn, x.mem)
		if err != nil {
			return nil, fmt.Errorf("reading challenge response: %w", err)
		}
		resp := in.GetChallengeResponse()
		if resp == nil {
			return nil, fmt.Errorf("reading challenge response: %w", unexpectedFrame("challenge_response", in))
		}
		if ev.GetTpmEndorsement() == nil {
			ev.TpmEndorsement = &attestationv1.TPMEndorsement{}
		}
		ev.TpmEndorsement.ActivatedSecret = resp.GetActivatedSecret()
	}
	return x.verifier.Validate(ctx, ev, userData)
}

// refuse sends a refusal verdict whose reason is cause's text, and returns
// cause (joined with the send error, if sending failed).
func (x *exchange) refuse(cause error) error {
	verdict := &atlsv1.Frame{Kind: &atlsv1.Frame_Verdict{Verdict: &atlsv1.Verdict{Reason: cause.Error(), Busy: errors.Is(cause, ErrBusy)}}}
	if err := writeFrame(x.conn, verdict); err != nil {
		return errors.Join(cause, fmt.Errorf("atls: sending refusal: %w", err))
	}
	return cause
}

func otherRole(role string) string {
	if role == roleClient {
		return roleServer
	}
	return roleClient
}
