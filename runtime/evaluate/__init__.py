"""Classification report, variant agreement and threshold calibration on labelled folders."""
