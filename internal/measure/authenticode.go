package measure

import (
	"crypto/sha256"
	"fmt"
	"sort"
)

// PEHash is the SHA-256 Authenticode digest of a PE image: the digest UEFI
// firmware extends into PCR 4 when it starts the image
// (EV_EFI_BOOT_SERVICES_APPLICATION), as EDK2's measured-boot library
// computes it:
//
//  1. the headers up to SizeOfHeaders, without the CheckSum field and the
//     certificate table's data directory entry;
//  2. each section's raw data, in file order;
//  3. whatever follows the last section, without the certificate table.
//
// Signing an image (adding a certificate table) does not change it; any
// other changed byte does.
func PEHash(img []byte) ([32]byte, error) {
	f, err := parsePE(img)
	if err != nil {
		return [32]byte{}, err
	}
	h := sha256.New()
	h.Write(img[:f.checksumOff])
	if f.certDirOff < 0 {
		h.Write(img[f.checksumOff+4 : f.sizeOfHeaders])
	} else {
		if f.certDirOff+8 > f.sizeOfHeaders {
			return [32]byte{}, malformed("certificate table entry past SizeOfHeaders")
		}
		h.Write(img[f.checksumOff+4 : f.certDirOff])
		h.Write(img[f.certDirOff+8 : f.sizeOfHeaders])
	}
	sections := append([]peSection(nil), f.sections...)
	sort.SliceStable(sections, func(i, j int) bool { return sections[i].pointerToRawData < sections[j].pointerToRawData })
	hashed := int64(f.sizeOfHeaders)
	for _, s := range sections {
		if s.sizeOfRawData == 0 {
			continue
		}
		h.Write(img[s.pointerToRawData : int64(s.pointerToRawData)+int64(s.sizeOfRawData)])
		hashed += int64(s.sizeOfRawData)
	}
	end := int64(len(img)) - int64(f.certSize)
	if hashed > int64(len(img)) {
		return [32]byte{}, malformed("sections overlap: %d bytes hashed of %d", hashed, len(img))
	}
	if end > hashed {
		h.Write(img[hashed:end])
	}
	var d [32]byte
	h.Sum(d[:0])
	return d, nil
}

// section returns the content of the named section as the image's loader
// sees it in memory: VirtualSize bytes, zero-filled beyond the raw data.
// The second result is false when there is no such section.
func (f *peFile) section(img []byte, name string) ([]byte, bool, error) {
	for _, s := range f.sections {
		if s.name != name {
			continue
		}
		if s.virtualSize > MaxImageSize {
			return nil, false, fmt.Errorf("%w: section %s: VirtualSize %d", ErrMalformed, name, s.virtualSize)
		}
		data := make([]byte, s.virtualSize)
		copy(data, img[s.pointerToRawData:s.pointerToRawData+min(s.sizeOfRawData, s.virtualSize)])
		return data, true, nil
	}
	return nil, false, nil
}
