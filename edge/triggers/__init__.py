"""Factory-line defect triggers: frame sources → inference → decision → defect events."""
