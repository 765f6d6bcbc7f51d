"""Rule files: YAML source with marks -> validated RuleSet; CEL conditions; action specs.

Pure core: imports the ground floor and `timeos.time`; reads only the rule files it is handed
(and imports python actions' modules); no store, no clock, no HTTP.
"""
