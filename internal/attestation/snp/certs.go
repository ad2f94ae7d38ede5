package snp

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	spb "github.com/google/go-sev-guest/proto/sevsnp"
	"github.com/google/go-sev-guest/verify/trust"
)

// maxCertSize bounds one certificate or certificate bundle fetched from a
// getter or read from the cache. AMD's are under 2 KiB each.
const maxCertSize = 64 << 10

// productLine names the processor product line ("Milan", "Genoa", "Turin")
// that produced the report. Reports of version 3 and later carry it in their
// signed CPUID field. Older reports do not; then the host's platform-info
// entry in the certificate table is used, which is unsigned and good only for
// choosing which certificate to fetch: the chain check decides afterwards.
func productLine(att *spb.Attestation) (string, error) {
	if fms := att.GetReport().GetCpuid1EaxFms(); fms != 0 {
		if line := kds.ProductLineFromFms(fms); line != "Unknown" {
			return line, nil
		}
		return "", fmt.Errorf("report names an unknown processor (CPUID 0x%08x)", fms)
	}
	// Look the entry up directly: abi.CertsFromProto panics on extras keys
	// that are not GUIDs, and the keys are untrusted.
	blob, ok := att.GetCertificateChain().GetExtras()[abi.ExtraPlatformInfoGUID]
	if !ok {
		return "", errors.New("report (version < 3) carries no processor product and the certificate table has no platform info")
	}
	info, err := abi.ParseExtraPlatformInfo(blob)
	if err != nil {
		return "", fmt.Errorf("parsing platform info: %v", err)
	}
	line := kds.ProductLine(abi.SevProductFromCpuid1Eax(info.Cpuid1Eax))
	if line == "Unknown" {
		return "", fmt.Errorf("platform info names an unknown processor (CPUID 0x%08x)", info.Cpuid1Eax)
	}
	return line, nil
}

// fetchVCEK fills in a missing VCEK from getter, at the URL AMD's KDS serves
// it: by product line, chip ID and reported TCB. A VLEK cannot be fetched
// (KDS serves VLEKs only to the cloud provider), so a missing one is an error.
func fetchVCEK(ctx context.Context, getter trust.HTTPSGetter, att *spb.Attestation) error {
	info, err := abi.ParseSignerInfo(att.GetReport().GetSignerInfo())
	if err != nil {
		return fmt.Errorf("parsing signer info: %v", err)
	}
	if att.CertificateChain == nil {
		att.CertificateChain = &spb.CertificateChain{}
	}
	chain := att.CertificateChain
	switch info.SigningKey {
	case abi.VcekReportSigner:
		if len(chain.GetVcekCert()) != 0 {
			return nil
		}
	case abi.VlekReportSigner:
		if len(chain.GetVlekCert()) != 0 {
			return nil
		}
		return errors.New("report is signed by a VLEK but carries no VLEK certificate (only the cloud provider can supply it)")
	default:
		return fmt.Errorf("report signer %v is neither VCEK nor VLEK", info.SigningKey)
	}
	if getter == nil {
		return errors.New("evidence carries no VCEK certificate and no certificate getter is configured")
	}
	line, err := productLine(att)
	if err != nil {
		return err
	}
	url := kds.VCEKCertURL(line, att.GetReport().GetChipId(), kds.TCBVersion(att.GetReport().GetReportedTcb()))
	der, err := trust.GetWith(ctx, getter, url)
	if err != nil {
		return fmt.Errorf("getting VCEK %s: %w", url, err)
	}
	if len(der) > maxCertSize {
		return fmt.Errorf("VCEK from %s is %d bytes, limit %d", url, len(der), maxCertSize)
	}
	chain.VcekCert = der
	return nil
}
