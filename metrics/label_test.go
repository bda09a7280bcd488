package metrics_test

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func metricHasLabel(m prometheus.Metric, label, value string) bool {
	var pb dto.Metric
	if err := m.Write(&pb); err != nil {
		return false
	}
	for _, lp := range pb.GetLabel() {
		if lp.GetName() == label && lp.GetValue() == value {
			return true
		}
	}
	return false
}
