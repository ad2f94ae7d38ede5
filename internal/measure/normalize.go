package measure

import "encoding/binary"

// Normalize makes a PE image's bytes independent of when it was built: it
// sets the COFF header's TimeDateStamp to timestamp and recomputes the
// optional header's CheckSum. objcopy (binutils 2.40) stamps the current
// time into every PE image it writes, and the stamp is part of the
// Authenticode hash the firmware measures into PCR 4: without this, two
// builds of the same unified kernel image would have different reference
// values.
func Normalize(img []byte, timestamp uint32) error {
	f, err := parsePE(img)
	if err != nil {
		return err
	}
	peOff := int(binary.LittleEndian.Uint32(img[0x3c:]))
	binary.LittleEndian.PutUint32(img[peOff+8:], timestamp)
	binary.LittleEndian.PutUint32(img[f.checksumOff:], peChecksum(img, f.checksumOff))
	return nil
}

// peChecksum is the PE image checksum (as IMAGEHLP's CheckSumMappedFile):
// the one's-complement-style 16-bit sum of the file with the CheckSum
// field taken as zero, plus the file's length.
func peChecksum(img []byte, checksumOff int) uint32 {
	var sum uint64
	for i := 0; i < len(img); i += 2 {
		if i == checksumOff || i == checksumOff+2 {
			continue
		}
		w := uint64(img[i])
		if i+1 < len(img) {
			w |= uint64(img[i+1]) << 8
		}
		sum += w
		sum = (sum & 0xffff) + (sum >> 16)
	}
	sum = (sum & 0xffff) + (sum >> 16)
	return uint32(sum) + uint32(len(img))
}
