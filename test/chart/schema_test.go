package chart

import (
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/nodecsr/kubelet-csr-controller/config"
)

type schema struct {
	Type                 any                `json:"type"`
	Ref                  string             `json:"$ref"`
	Pattern              string             `json:"pattern"`
	Properties           map[string]*schema `json:"properties"`
	Items                *schema            `json:"items"`
	AdditionalProperties any                `json:"additionalProperties"`
	Definitions          map[string]*schema `json:"definitions"`
}

func loadSchema(t *testing.T) *schema {
	t.Helper()
	b, err := os.ReadFile(chartDir + "/values.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var s schema
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// TestSchemaDescribesExactlyTheConfigurationFile keeps values.schema.json's
// config in step with config.ControllerConfig: a field added to the
// controller must be added to the schema (which refuses unknown fields, as
// the controller does), with the same type.
func TestSchemaDescribesExactlyTheConfigurationFile(t *testing.T) {
	t.Parallel()
	s := loadSchema(t)
	var problems []string
	compareSchema(reflect.TypeFor[config.ControllerConfig](), s.Properties["config"], "config", &problems)
	if len(problems) > 0 {
		t.Errorf("values.schema.json's config differs from config.ControllerConfig:\n  %s", strings.Join(problems, "\n  "))
	}
}

// chartWritten are the fields the chart writes itself.
var chartWritten = []string{"apiVersion", "kind"}

func compareSchema(typ reflect.Type, s *schema, path string, problems *[]string) {
	for typ.Kind() == reflect.Pointer {
		typ = typ.Elem()
	}
	report := func(format string, args ...any) {
		*problems = append(*problems, path+": "+fmt.Sprintf(format, args...))
	}
	if s == nil {
		report("missing from the schema")
		return
	}
	if typ == reflect.TypeFor[metav1.Duration]() {
		if s.Ref != "#/definitions/duration" {
			report("a duration, but the schema does not use #/definitions/duration")
		}
		return
	}
	want := map[reflect.Kind]string{
		reflect.Struct: "object", reflect.Slice: "array", reflect.String: "string", reflect.Bool: "boolean",
		reflect.Int: "integer", reflect.Int32: "integer", reflect.Int64: "integer", reflect.Float32: "number", reflect.Float64: "number",
	}[typ.Kind()]
	if s.Type != want {
		report("type %v in the schema, %s in Go", s.Type, want)
		return
	}
	switch typ.Kind() {
	case reflect.Slice:
		compareSchema(typ.Elem(), s.Items, path+"[]", problems)
	case reflect.Struct:
		if s.AdditionalProperties != false {
			report("the controller refuses unknown fields; the schema must too (additionalProperties: false)")
		}
		fields := map[string]bool{}
		for f := range typ.Fields() {
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "" || name == "-" || (path == "config" && slices.Contains(chartWritten, name)) {
				continue
			}
			fields[name] = true
			compareSchema(f.Type, s.Properties[name], path+"."+name, problems)
		}
		for name := range s.Properties {
			if !fields[name] {
				*problems = append(*problems, path+"."+name+": in the schema, not in config.ControllerConfig")
			}
		}
	}
}

func TestSchemaDurationsAreGoDurations(t *testing.T) {
	t.Parallel()
	re := regexp.MustCompile(loadSchema(t).Definitions["duration"].Pattern)
	for _, d := range []string{"0", "15m", "8760h", "1h30m", "2.5s", "500ms", ".5s", "15 minutes", "1d", "-1s", "", "m"} {
		_, err := time.ParseDuration(d)
		// Negative durations parse but the controller refuses them.
		valid := err == nil && !strings.HasPrefix(d, "-")
		if re.MatchString(d) != valid {
			t.Errorf("the schema's duration pattern matches %q: %v; time.ParseDuration: %v", d, re.MatchString(d), err)
		}
	}
}
