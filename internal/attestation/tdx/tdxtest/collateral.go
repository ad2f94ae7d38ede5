package tdxtest

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// CollateralOptions configures fake Intel PCS collateral. The zero value is
// collateral saying the platform is up to date, valid for 30 days.
type CollateralOptions struct {
	// TCBStatus is the status of every TDX TCB level, as Intel spells it
	// ("UpToDate", "OutOfDate", "SWHardeningNeeded", …); empty means
	// "UpToDate".
	TCBStatus string
	// QETCBStatus is the status of the quoting enclave's TCB level; empty
	// means "UpToDate".
	QETCBStatus string
	// NextUpdate is when the collateral goes stale; zero means 30 days from
	// the chain's Now.
	NextUpdate time.Time
}

// PCSResponse is one fake Intel PCS response: the HTTP headers that carry
// the issuer chain, and the JSON body.
type PCSResponse struct {
	Header map[string][]string
	Body   []byte
}

// Collateral returns fake Intel PCS collateral for the chain's platform: the
// TDX TCB info for the PCK certificate's FMSPC and the TD QE identity, both
// signed by a fake "Intel SGX TCB Signing" certificate under Root. The TCB
// levels match any TEE_TCB_SVN whose byte 1 (the TDX module's major
// version) is below 16.
func (c *Chain) Collateral(opts CollateralOptions) (tcbInfo, qeIdentity PCSResponse, err error) {
	exts, err := pcs.PckCertificateExtensions(c.pck)
	if err != nil {
		return PCSResponse{}, PCSResponse{}, fmt.Errorf("tdxtest: reading PCK extensions: %w", err)
	}
	now := c.now().UTC()
	next := opts.NextUpdate
	if next.IsZero() {
		next = now.Add(30 * 24 * time.Hour)
	}
	tcbStatus := defaultStatus(opts.TCBStatus)
	level := func(tcb map[string]any, status string) []any {
		return []any{map[string]any{"tcb": tcb, "tcbDate": now.Format(time.RFC3339), "tcbStatus": status}}
	}
	zeros := func(n int) []any {
		out := make([]any, n)
		for i := range out {
			out[i] = map[string]any{"svn": 0}
		}
		return out
	}

	body := c.template.GetTdQuoteBody()
	var modules []any
	for v := 1; v < 16; v++ {
		modules = append(modules, map[string]any{
			"id":             "TDX_" + hex.EncodeToString([]byte{byte(v)}),
			"mrsigner":       hex.EncodeToString(body.GetMrSignerSeam()),
			"attributes":     hex.EncodeToString(body.GetSeamAttributes()),
			"attributesMask": strings.Repeat("FF", len(body.GetSeamAttributes())),
			"tcbLevels":      level(map[string]any{"isvsvn": 0}, tcbStatus),
		})
	}
	info := map[string]any{
		"id":                      "TDX",
		"version":                 3,
		"issueDate":               now.Format(time.RFC3339),
		"nextUpdate":              next.UTC().Format(time.RFC3339),
		"fmspc":                   exts.FMSPC,
		"pceId":                   exts.PCEID,
		"tcbType":                 0,
		"tcbEvaluationDataNumber": 17,
		"tdxModule": map[string]any{
			"mrsigner":       hex.EncodeToString(body.GetMrSignerSeam()),
			"attributes":     hex.EncodeToString(body.GetSeamAttributes()),
			"attributesMask": strings.Repeat("FF", len(body.GetSeamAttributes())),
		},
		"tdxModuleIdentities": modules,
		"tcbLevels": level(map[string]any{
			"sgxtcbcomponents": zeros(16),
			"pcesvn":           0,
			"tdxtcbcomponents": zeros(16),
		}, tcbStatus),
	}
	if tcbInfo, err = c.pcsResponse("tcbInfo", info, pcs.TcbInfoIssuerChainPhrase); err != nil {
		return PCSResponse{}, PCSResponse{}, err
	}

	qe := c.template.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetQeReport()
	misc := binary.LittleEndian.AppendUint32(nil, qe.GetMiscSelect())
	identity := map[string]any{
		"id":                      "TD_QE",
		"version":                 2,
		"issueDate":               now.Format(time.RFC3339),
		"nextUpdate":              next.UTC().Format(time.RFC3339),
		"tcbEvaluationDataNumber": 17,
		"miscselect":              hex.EncodeToString(misc),
		"miscselectMask":          "FFFFFFFF",
		"attributes":              hex.EncodeToString(qe.GetAttributes()),
		"attributesMask":          strings.Repeat("FF", len(qe.GetAttributes())),
		"mrsigner":                hex.EncodeToString(qe.GetMrSigner()),
		"isvprodid":               qe.GetIsvProdId(),
		"tcbLevels":               level(map[string]any{"isvsvn": 0}, defaultStatus(opts.QETCBStatus)),
	}
	if qeIdentity, err = c.pcsResponse("enclaveIdentity", identity, pcs.SgxQeIdentityIssuerChainPhrase); err != nil {
		return PCSResponse{}, PCSResponse{}, err
	}
	return tcbInfo, qeIdentity, nil
}

// pcsResponse signs the JSON of value under name the way Intel PCS does:
// {"<name>": value, "signature": hex(r ‖ s over the exact value bytes)}.
func (c *Chain) pcsResponse(name string, value any, chainHeader string) (PCSResponse, error) {
	raw, err := json.Marshal(value)
	if err != nil {
		return PCSResponse{}, fmt.Errorf("tdxtest: encoding %s: %w", name, err)
	}
	sig, err := c.rawSign(c.tcbKey, raw)
	if err != nil {
		return PCSResponse{}, fmt.Errorf("tdxtest: signing %s: %w", name, err)
	}
	body, err := json.Marshal(map[string]any{name: json.RawMessage(raw), "signature": hex.EncodeToString(sig)})
	if err != nil {
		return PCSResponse{}, fmt.Errorf("tdxtest: encoding %s response: %w", name, err)
	}
	issuerChain := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.tcbSigner.Raw})) +
		string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.root.Raw}))
	return PCSResponse{
		Header: map[string][]string{chainHeader: {url.QueryEscape(issuerChain)}},
		Body:   body,
	}, nil
}

func defaultStatus(s string) string {
	if s == "" {
		return string(pcs.TcbComponentStatusUpToDate)
	}
	return s
}
