"""The front door: RewardService (`service`), request planning and batches (`scorer`), the
remote sampler pool and principle source (`pool`), its SampleChannel calls (`channel`),
EndpointSlice discovery (`discovery`), admission limits (`admission`), OpenRLHF's HTTP
endpoint (`http_rm`) and wiring (`main`).
"""
