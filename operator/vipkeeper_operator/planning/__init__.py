"""Pure planning: cluster state in (vipkeeper_operator.world), NodeAssignments and statuses out."""
