package store

import "testing"

// FuzzParseSetting checks for every setting that a value parseSetting
// accepts is stored in a form it accepts again unchanged.
func FuzzParseSetting(f *testing.F) {
	for _, s := range []string{":6619", "127.0.0.1:0", "10s", "1m30s", "42", "2.5", "debug", "WARNING", "::1", "a.b", "'; DROP TABLE x; --", "1e400", "-0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, v string) {
		for _, def := range SettingDefs {
			if def.Kind.FromFile() {
				continue
			}
			got, err := parseSetting(def, v)
			if err != nil {
				continue
			}
			again, err := parseSetting(def, got)
			if err != nil || again != got {
				t.Errorf("%s: parseSetting(%q) = %q, which parses to %q, %v", def.Key, v, got, again, err)
			}
		}
	})
}
