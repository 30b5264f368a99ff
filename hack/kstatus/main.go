// Command kstatus prints what kstatus (sigs.k8s.io/cli-utils/pkg/kstatus/status, the convention Flux and
// `kubectl wait` follow) computes for Kubernetes objects. Built by hack/build-rig into .testcluster/bin/kstatus;
// used by the cluster tier through tests/kstatus.py.
//
// Input (stdin): JSON — one object, a list ({"items": [...]}, as `kubectl get -o json` prints), or a JSON array of
// objects and lists; several such values may follow one another. Output (stdout): one JSON line per object,
//
//	{"kind": ..., "name": ..., "namespace": ..., "status": "InProgress|Current|Failed|Terminating|NotFound|Unknown", "message": ...}
//
// An object that kstatus cannot compute a status for is reported as Unknown with the error as its message.
// Exit status: 0 on success, 2 on malformed input (not JSON, an element that is not an object, no input at all).
package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type result struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Status    string `json:"status"`
	Message   string `json:"message"`
}

// objects flattens one decoded JSON value into the objects it holds.
func objects(v interface{}) ([]map[string]interface{}, error) {
	switch t := v.(type) {
	case []interface{}:
		var out []map[string]interface{}
		for i, e := range t {
			m, ok := e.(map[string]interface{})
			if !ok {
				return nil, fmt.Errorf("element %d of the array is %T, not an object", i, e)
			}
			items, err := objects(m) // a list in the array contributes its items
			if err != nil {
				return nil, fmt.Errorf("element %d of the array: %w", i, err)
			}
			out = append(out, items...)
		}
		return out, nil
	case map[string]interface{}:
		if items, ok := t["items"]; ok {
			if _, isList := items.([]interface{}); isList {
				return objects(items)
			}
			if items == nil { // an empty list as some clients print it
				return nil, nil
			}
		}
		return []map[string]interface{}{t}, nil
	default:
		return nil, fmt.Errorf("input is %T, not an object, an array or a list", v)
	}
}

func compute(obj map[string]interface{}) result {
	u := &unstructured.Unstructured{Object: obj}
	r := result{Kind: u.GetKind(), Name: u.GetName(), Namespace: u.GetNamespace()}
	res, err := status.Compute(u)
	if err != nil {
		r.Status, r.Message = string(status.UnknownStatus), err.Error()
		return r
	}
	r.Status, r.Message = string(res.Status), res.Message
	return r
}

func run(in io.Reader, out io.Writer) error {
	dec := json.NewDecoder(bufio.NewReader(in))
	enc := json.NewEncoder(out)
	values := 0
	for {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return fmt.Errorf("reading JSON: %w", err)
		}
		values++
		// utiljson turns whole numbers into int64, as the apiserver's decoder does: kstatus reads generation and
		// observedGeneration as integers and would ignore a float64.
		var v interface{}
		if err := utiljson.Unmarshal(raw, &v); err != nil {
			return fmt.Errorf("value %d: %w", values, err)
		}
		objs, err := objects(v)
		if err != nil {
			return fmt.Errorf("value %d: %w", values, err)
		}
		for _, o := range objs {
			if err := enc.Encode(compute(o)); err != nil {
				return err
			}
		}
	}
	if values == 0 {
		return errors.New("no JSON on stdin")
	}
	return nil
}

func main() {
	w := bufio.NewWriter(os.Stdout)
	err := run(os.Stdin, w)
	if ferr := w.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "kstatus:", err)
		os.Exit(2)
	}
}
