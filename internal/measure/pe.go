package measure

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrMalformed is wrapped by every error about a PE image's structure.
var ErrMalformed = errors.New("malformed PE image")

// MaxImageSize bounds the PE images this package reads (a unified kernel
// image with a large initrd is well below it).
const MaxImageSize = 1 << 30

// peFile is what Authenticode hashing and section extraction need from a
// PE/COFF image, with every offset checked against the file.
type peFile struct {
	// checksumOff is the file offset of the optional header's CheckSum.
	checksumOff int
	// certDirOff is the file offset of the certificate table's data
	// directory entry, or -1 when the image has no such entry.
	certDirOff int
	// certSize is the size of the certificate table (0 without one).
	certSize       int
	sizeOfHeaders  int
	sections       []peSection
	numberOfRvaDir uint32
}

type peSection struct {
	name             string
	virtualSize      uint32
	virtualAddress   uint32
	sizeOfRawData    uint32
	pointerToRawData uint32
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// parsePE reads the headers and section table of a PE32 or PE32+ image.
func parsePE(img []byte) (*peFile, error) {
	if len(img) > MaxImageSize {
		return nil, malformed("%d bytes, limit %d", len(img), MaxImageSize)
	}
	if len(img) < 0x40 || img[0] != 'M' || img[1] != 'Z' {
		return nil, malformed("no MZ header")
	}
	peOff := int(binary.LittleEndian.Uint32(img[0x3c:]))
	if peOff < 0x40 || peOff > len(img)-24 || string(img[peOff:peOff+4]) != "PE\x00\x00" {
		return nil, malformed("no PE signature at e_lfanew %#x", peOff)
	}
	coff := peOff + 4
	numSections := int(binary.LittleEndian.Uint16(img[coff+2:]))
	optSize := int(binary.LittleEndian.Uint16(img[coff+16:]))
	opt := coff + 20
	if opt+optSize > len(img) || optSize < 2 {
		return nil, malformed("optional header of %d bytes past the end", optSize)
	}
	var dirCountOff, dirOff int
	switch magic := binary.LittleEndian.Uint16(img[opt:]); magic {
	case 0x10b: // PE32
		dirCountOff, dirOff = opt+92, opt+96
	case 0x20b: // PE32+
		dirCountOff, dirOff = opt+108, opt+112
	default:
		return nil, malformed("optional header magic %#x", magic)
	}
	if dirOff > opt+optSize {
		return nil, malformed("optional header of %d bytes too short", optSize)
	}
	f := &peFile{
		checksumOff:    opt + 64,
		certDirOff:     -1,
		sizeOfHeaders:  int(binary.LittleEndian.Uint32(img[opt+60:])),
		numberOfRvaDir: binary.LittleEndian.Uint32(img[dirCountOff:]),
	}
	if f.numberOfRvaDir > 16 || dirOff+int(f.numberOfRvaDir)*8 > opt+optSize {
		return nil, malformed("%d data directories do not fit the optional header", f.numberOfRvaDir)
	}
	// Data directory 4 is the certificate table (a file offset, not an RVA).
	if f.numberOfRvaDir > 4 {
		f.certDirOff = dirOff + 4*8
		certOff := int64(binary.LittleEndian.Uint32(img[f.certDirOff:]))
		certSize := int64(binary.LittleEndian.Uint32(img[f.certDirOff+4:]))
		if certSize > 0 && (certOff+certSize > int64(len(img)) || certOff+certSize != int64(len(img))) {
			// Authenticode requires the table at the end of the file.
			return nil, malformed("certificate table at %#x (%d bytes) does not end the file", certOff, certSize)
		}
		f.certSize = int(certSize)
	}
	secTable := opt + optSize
	if numSections > 96 || secTable+numSections*40 > len(img) {
		return nil, malformed("section table of %d entries past the end", numSections)
	}
	if f.sizeOfHeaders < secTable+numSections*40 || f.sizeOfHeaders > len(img) {
		return nil, malformed("SizeOfHeaders %d", f.sizeOfHeaders)
	}
	for i := range numSections {
		h := img[secTable+i*40 : secTable+(i+1)*40]
		name := h[:8]
		if n := indexByte(name, 0); n >= 0 {
			name = name[:n]
		}
		s := peSection{
			name:             string(name),
			virtualSize:      binary.LittleEndian.Uint32(h[8:]),
			virtualAddress:   binary.LittleEndian.Uint32(h[12:]),
			sizeOfRawData:    binary.LittleEndian.Uint32(h[16:]),
			pointerToRawData: binary.LittleEndian.Uint32(h[20:]),
		}
		if int64(s.pointerToRawData)+int64(s.sizeOfRawData) > int64(len(img)) {
			return nil, malformed("section %q: raw data at %#x (%d bytes) past the end", s.name, s.pointerToRawData, s.sizeOfRawData)
		}
		f.sections = append(f.sections, s)
	}
	return f, nil
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}
