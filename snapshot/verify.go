package snapshot

import "io"

// SectionInfo describes one section of a verified snapshot.
type SectionInfo struct {
	Name string
	Size int64 // data length in bytes
}

// Verify reads a whole snapshot from r and checks everything a Reader
// checks, discarding the data. It is meant for validating a snapshot, such
// as an uploaded backup, before adopting it. On success it returns the
// header and the sections in file order; on error the header and sections
// are zero and must not be used.
func Verify(r io.Reader) (Header, []SectionInfo, error) {
	sr, err := NewReader(r)
	if err != nil {
		return Header{}, nil, err
	}
	var infos []SectionInfo
	for {
		name, sec, err := sr.Next()
		if err == io.EOF {
			return sr.Header(), infos, nil
		}
		if err != nil {
			return Header{}, nil, err
		}
		n, err := io.Copy(io.Discard, sec)
		if err != nil {
			return Header{}, nil, err // already names the section
		}
		infos = append(infos, SectionInfo{Name: name, Size: n})
	}
}
