// Package tdxtest is a FAKE Intel TDX quote signer for tests. It mints its own
// certificate chain named like Intel's ("Intel SGX Root CA" → "Intel SGX PCK
// Platform CA" → "Intel SGX PCK Certificate", ECDSA P-256) and signs TDX
// version 4 quotes with it, so that go-tdx-guest's real verifier accepts them
// when, and only when, the fake root is the trusted root.
//
// Nothing here proves anything: a quote from this package attests no
// hardware. Production code never trusts a Chain's root; tests pass
// Chain.Pool as the validator's trusted roots.
//
// The quotes are built from go-tdx-guest's sample quote (a real quote from a
// Sapphire Rapids machine): the TD body fields are replaced, the attestation
// key and PCK key are our own, the PCK leaf carries the real leaf's SGX
// extension (FMSPC, PCE ID, TCB), and every signature and size field is
// recomputed.
package tdxtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/testing/testdata"
	"google.golang.org/protobuf/proto"
)

// Sizes of TD quote body fields.
const (
	measurementSize  = 48
	reportDataSize   = 64
	attributesSize   = 8
	teeTCBSVNSize    = 16
	qeReportDataSize = 64
	sigHalf          = 32
)

// Options configures a fake chain. The zero value gives a chain that is
// valid from an hour ago for ten years.
type Options struct {
	// Now is the time the certificates are issued around; nil means
	// time.Now.
	Now func() time.Time
	// PCKNotAfter, if set, ends the validity of the PCK leaf certificate,
	// e.g. in the past to test expiry. The CAs stay valid.
	PCKNotAfter time.Time
	// Rand is the source of keys and signatures; nil means crypto/rand.
	Rand io.Reader
}

// Body holds the TD quote body fields a test controls. REPORTDATA is not
// here: it comes from the quote request.
type Body struct {
	// MRTD is the measurement of the initial TD contents.
	MRTD [measurementSize]byte
	// RTMRs are the runtime measurement registers 0..3.
	RTMRs [4][measurementSize]byte
	// TDAttributes is TD_ATTRIBUTES, little-endian; bit 0 is DEBUG.
	TDAttributes [attributesSize]byte
	// TEETCBSVN is TEE_TCB_SVN, one byte per component.
	TEETCBSVN [teeTCBSVNSize]byte
	// XFAM, if not nil, replaces the sample quote's XFAM (8 bytes,
	// little-endian); nil keeps it (a valid one: 0x61ae7).
	XFAM []byte
	// MRConfigID, MROwner and MROwnerConfig are the host-set values; zero
	// unless a test sets them.
	MRConfigID    [measurementSize]byte
	MROwner       [measurementSize]byte
	MROwnerConfig [measurementSize]byte
	// SEAMAttributes is SEAMATTRIBUTES; zero (a production TDX module)
	// unless a test sets it.
	SEAMAttributes [attributesSize]byte
}

// Chain is a fake Intel-shaped PCK chain plus a fake quoting enclave
// attestation key. Each Chain has its own root: a quote from one Chain is
// untrusted by a validator that trusts another.
type Chain struct {
	rand      io.Reader
	now       func() time.Time
	root      *x509.Certificate
	tcbSigner *x509.Certificate
	tcbKey    *ecdsa.PrivateKey
	inter     *x509.Certificate
	pck       *x509.Certificate
	pckKey    *ecdsa.PrivateKey
	ak        *ecdsa.PrivateKey
	pemChain  []byte
	template  *pb.QuoteV4
}

// NewChain mints a root, a PCK platform CA, a PCK leaf and an attestation key.
func NewChain(opts Options) (*Chain, error) {
	rnd := opts.Rand
	if rnd == nil {
		rnd = rand.Reader
	}
	nowFn := opts.Now
	if nowFn == nil {
		nowFn = time.Now
	}
	now := nowFn()
	parsed, err := abi.QuoteToProto(testdata.RawQuote)
	if err != nil {
		return nil, fmt.Errorf("tdxtest: parsing sample quote: %w", err)
	}
	template, ok := parsed.(*pb.QuoteV4)
	if !ok {
		return nil, fmt.Errorf("tdxtest: sample quote is %T, want QuoteV4", parsed)
	}
	sgxExt, err := sampleSGXExtension(template)
	if err != nil {
		return nil, err
	}

	c := &Chain{rand: rnd, now: nowFn, template: template}
	rootKey, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, fmt.Errorf("tdxtest: root key: %w", err)
	}
	interKey, err := ecdsa.GenerateKey(elliptic.P256(), rnd)
	if err != nil {
		return nil, fmt.Errorf("tdxtest: platform CA key: %w", err)
	}
	if c.pckKey, err = ecdsa.GenerateKey(elliptic.P256(), rnd); err != nil {
		return nil, fmt.Errorf("tdxtest: PCK key: %w", err)
	}
	if c.ak, err = ecdsa.GenerateKey(elliptic.P256(), rnd); err != nil {
		return nil, fmt.Errorf("tdxtest: attestation key: %w", err)
	}
	if c.tcbKey, err = ecdsa.GenerateKey(elliptic.P256(), rnd); err != nil {
		return nil, fmt.Errorf("tdxtest: TCB signing key: %w", err)
	}

	notBefore, notAfter := now.Add(-time.Hour), now.Add(10*365*24*time.Hour)
	rootTmpl := caTemplate("Intel SGX Root CA", 1, notBefore, notAfter)
	if c.root, err = c.sign(rootTmpl, rootTmpl, &rootKey.PublicKey, rootKey); err != nil {
		return nil, fmt.Errorf("tdxtest: root certificate: %w", err)
	}
	interTmpl := caTemplate("Intel SGX PCK Platform CA", 0, notBefore, notAfter)
	if c.inter, err = c.sign(interTmpl, c.root, &interKey.PublicKey, rootKey); err != nil {
		return nil, fmt.Errorf("tdxtest: platform CA certificate: %w", err)
	}
	tcbTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(4),
		Subject:               intelName("Intel SGX TCB Signing"),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		SubjectKeyId:          []byte{4, 4, 4, 4},
		CRLDistributionPoints: []string{"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"},
	}
	if c.tcbSigner, err = c.sign(tcbTmpl, c.root, &c.tcbKey.PublicKey, rootKey); err != nil {
		return nil, fmt.Errorf("tdxtest: TCB signing certificate: %w", err)
	}
	pckNotAfter := notAfter
	if !opts.PCKNotAfter.IsZero() {
		pckNotAfter = opts.PCKNotAfter
	}
	leafTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(3),
		Subject:               intelName("Intel SGX PCK Certificate"),
		NotBefore:             notBefore,
		NotAfter:              pckNotAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		SubjectKeyId:          []byte{3, 3, 3, 3},
		CRLDistributionPoints: []string{"https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der"},
		// The SGX extension (FMSPC, PCE ID, TCB) is copied from the real
		// leaf; with AKI, SKI, CRL DP, key usage and basic constraints the
		// leaf has the six extensions go-tdx-guest requires.
		ExtraExtensions: []pkix.Extension{sgxExt},
	}
	if c.pck, err = c.sign(leafTmpl, c.inter, &c.pckKey.PublicKey, interKey); err != nil {
		return nil, fmt.Errorf("tdxtest: PCK certificate: %w", err)
	}
	for _, cert := range []*x509.Certificate{c.pck, c.inter, c.root} {
		c.pemChain = append(c.pemChain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	return c, nil
}

// Root is the fake "Intel SGX Root CA" certificate.
func (c *Chain) Root() *x509.Certificate { return c.root }

// Pool is a pool holding only Root, for a validator's trusted roots.
func (c *Chain) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.root)
	return p
}

// Quote returns a signed TDX quote in wire form with the body fields of b and
// REPORTDATA set to reportData.
func (c *Chain) Quote(b Body, reportData [reportDataSize]byte) ([]byte, error) {
	q := proto.Clone(c.template).(*pb.QuoteV4)
	body := q.GetTdQuoteBody()
	body.MrTd = bytes.Clone(b.MRTD[:])
	body.Rtmrs = make([][]byte, len(b.RTMRs))
	for i := range b.RTMRs {
		body.Rtmrs[i] = bytes.Clone(b.RTMRs[i][:])
	}
	body.TdAttributes = bytes.Clone(b.TDAttributes[:])
	if b.XFAM != nil {
		body.Xfam = bytes.Clone(b.XFAM)
	}
	body.MrConfigId = bytes.Clone(b.MRConfigID[:])
	body.MrOwner = bytes.Clone(b.MROwner[:])
	body.MrOwnerConfig = bytes.Clone(b.MROwnerConfig[:])
	body.SeamAttributes = bytes.Clone(b.SEAMAttributes[:])
	body.TeeTcbSvn = bytes.Clone(b.TEETCBSVN[:])
	body.ReportData = bytes.Clone(reportData[:])

	signed := q.GetSignedData()
	signed.EcdsaAttestationKey = rawPublicKey(&c.ak.PublicKey)
	qeData := signed.GetCertificationData().GetQeReportCertificationData()
	qeData.GetPckCertificateChainData().PckCertChain = bytes.Clone(c.pemChain)
	// The QE report binds the attestation key:
	// REPORTDATA = SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes.
	binding := sha256.Sum256(append(bytes.Clone(signed.GetEcdsaAttestationKey()), qeData.GetQeAuthData().GetData()...))
	qeData.GetQeReport().ReportData = append(binding[:], make([]byte, qeReportDataSize-len(binding))...)
	q.ExtraBytes = nil
	return c.Sign(q)
}

// Sign recomputes the size fields of q, signs its header and body with the
// chain's attestation key and its QE report with the PCK key, and returns
// the quote in wire form. It leaves every other field as it is, so a test can
// change a field (say, the QE report data) and get a quote whose signatures
// are valid but whose content is wrong.
func (c *Chain) Sign(q *pb.QuoteV4) ([]byte, error) {
	signed := q.GetSignedData()
	cert := signed.GetCertificationData()
	qeData := cert.GetQeReportCertificationData()
	if qeData == nil || q.GetHeader() == nil || q.GetTdQuoteBody() == nil {
		return nil, errors.New("tdxtest: quote lacks header, body or QE certification data")
	}
	chain := qeData.GetPckCertificateChainData()
	chain.Size = uint32(len(chain.GetPckCertChain()))
	qeData.GetQeAuthData().ParsedDataSize = uint32(len(qeData.GetQeAuthData().GetData()))
	// QE report, its signature, auth data size (2) and data, chain type (2)
	// and size (4) and data.
	cert.Size = uint32(0x180 + 0x40 + 2 + len(qeData.GetQeAuthData().GetData()) + 6 + len(chain.GetPckCertChain()))
	// Signature, attestation key, certification data type (2) and size (4).
	q.SignedDataSize = 0x80 + 6 + cert.GetSize()

	qeReport, err := abi.EnclaveReportToAbiBytes(qeData.GetQeReport())
	if err != nil {
		return nil, fmt.Errorf("tdxtest: encoding QE report: %w", err)
	}
	if qeData.QeReportSignature, err = c.rawSign(c.pckKey, qeReport); err != nil {
		return nil, fmt.Errorf("tdxtest: signing QE report: %w", err)
	}
	header, err := abi.HeaderToAbiBytes(q.GetHeader())
	if err != nil {
		return nil, fmt.Errorf("tdxtest: encoding header: %w", err)
	}
	body, err := abi.TdQuoteBodyToAbiBytes(q.GetTdQuoteBody())
	if err != nil {
		return nil, fmt.Errorf("tdxtest: encoding body: %w", err)
	}
	if signed.Signature, err = c.rawSign(c.ak, append(header, body...)); err != nil {
		return nil, fmt.Errorf("tdxtest: signing quote: %w", err)
	}
	raw, err := abi.QuoteToAbiBytes(q)
	if err != nil {
		return nil, fmt.Errorf("tdxtest: encoding quote: %w", err)
	}
	return raw, nil
}

// QuoteProvider returns a fake quote provider whose quotes carry the body
// fields of b. It has the method set of go-tdx-guest's client.QuoteProvider,
// so the real tdx.Issuer runs unchanged over it.
func (c *Chain) QuoteProvider(b Body) *QuoteProvider {
	return &QuoteProvider{chain: c, body: b}
}

// QuoteProvider is a fake TDX quote provider backed by a Chain.
type QuoteProvider struct {
	chain *Chain
	body  Body
}

// IsSupported always reports support.
func (p *QuoteProvider) IsSupported() error { return nil }

// GetRawQuote returns a quote binding reportData.
func (p *QuoteProvider) GetRawQuote(reportData [reportDataSize]byte) ([]uint8, error) {
	return p.chain.Quote(p.body, reportData)
}

func (c *Chain) sign(tmpl, parent *x509.Certificate, pub *ecdsa.PublicKey, priv *ecdsa.PrivateKey) (*x509.Certificate, error) {
	tmpl.SignatureAlgorithm = x509.ECDSAWithSHA256
	der, err := x509.CreateCertificate(c.rand, tmpl, parent, pub, priv)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// rawSign signs SHA-256(msg) and returns r ‖ s, 32 bytes each, as TDX quotes
// carry them.
func (c *Chain) rawSign(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	digest := sha256.Sum256(msg)
	r, s, err := ecdsa.Sign(c.rand, key, digest[:])
	if err != nil {
		return nil, err
	}
	out := make([]byte, 2*sigHalf)
	r.FillBytes(out[:sigHalf])
	s.FillBytes(out[sigHalf:])
	return out, nil
}

func rawPublicKey(pub *ecdsa.PublicKey) []byte {
	out := make([]byte, 2*sigHalf)
	pub.X.FillBytes(out[:sigHalf])
	pub.Y.FillBytes(out[sigHalf:])
	return out
}

func caTemplate(cn string, maxPath int, notBefore, notAfter time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          big.NewInt(int64(maxPath) + 1),
		Subject:               intelName(cn),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPath,
		MaxPathLenZero:        maxPath == 0,
		SubjectKeyId:          []byte{byte(maxPath + 1), 1, 1, 1},
		CRLDistributionPoints: []string{"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der"},
	}
}

func intelName(cn string) pkix.Name {
	return pkix.Name{
		CommonName:   cn,
		Organization: []string{"Intel Corporation"},
		Locality:     []string{"Santa Clara"},
		Province:     []string{"CA"},
		Country:      []string{"US"},
	}
}

// sampleSGXExtension returns the SGX extension of the sample quote's PCK leaf.
func sampleSGXExtension(q *pb.QuoteV4) (pkix.Extension, error) {
	chain := q.GetSignedData().GetCertificationData().GetQeReportCertificationData().GetPckCertificateChainData().GetPckCertChain()
	block, _ := pem.Decode(chain)
	if block == nil {
		return pkix.Extension{}, errors.New("tdxtest: sample quote has no PCK certificate")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("tdxtest: parsing sample PCK certificate: %w", err)
	}
	for _, ext := range leaf.Extensions {
		if ext.Id.Equal(pcs.OidSgxExtension) {
			return ext, nil
		}
	}
	return pkix.Extension{}, errors.New("tdxtest: sample PCK certificate has no SGX extension")
}
