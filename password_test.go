package mesh

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestGeneratePassword(t *testing.T) {
	seen := make(map[string]bool)
	for range 100 {
		pw, err := GeneratePassword()
		require.NoError(t, err)
		require.Len(t, pw, 52)
		require.Empty(t, strings.Trim(pw, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"), "only A-Z and 2-7")
		b, err := passwordEncoding.DecodeString(pw)
		require.NoError(t, err)
		require.Len(t, b, generatedPasswordBytes)
		require.False(t, seen[pw], "a password came out twice")
		seen[pw] = true
		require.GreaterOrEqual(t, len(pw), minPasswordLen)
	}
}

// TestWeakPasswordWarning checks that NewRouter warns about short
// passwords, and only about those.
func TestWeakPasswordWarning(t *testing.T) {
	strong, err := GeneratePassword()
	require.NoError(t, err)
	tests := []struct {
		password []byte
		warns    bool
	}{
		{nil, false},
		{[]byte{}, true},
		{[]byte("s3cret"), true},
		{[]byte(strings.Repeat("x", minPasswordLen-1)), true},
		{[]byte(strings.Repeat("x", minPasswordLen)), false},
		{[]byte(strong), false},
	}
	for _, tt := range tests {
		log := &logRecorder{}
		_, err := NewRouter(Config{Password: tt.password}, testPeerName(1), "", nil, log)
		require.NoError(t, err)
		lines := log.matching("password is only", "GeneratePassword")
		if tt.warns {
			require.Len(t, lines, 1, "password of %d bytes", len(tt.password))
			require.Contains(t, lines[0], "offline")
		} else {
			require.Empty(t, lines, "password of %d bytes", len(tt.password))
		}
	}
}
